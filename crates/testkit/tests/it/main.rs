//! The fake server through real sockets, driven by brook-conn's `Connection`.
//!
//! Every test body runs under a deadline (`within`): a hang is a failure, never a stuck
//! test. The tests of slow or silent servers set a socket timeout on the connection and
//! assert the timeout error.

use std::future::Future;
use std::time::{Duration, Instant};

use brook_command::{Insert, Ping, RunCommand};
use brook_conn::{ConnError, Connection, ConnectionOptions, ServerAddress, ServerKind};
use brook_testkit::shapes::{self, BatchKind, Topology};
use brook_testkit::{Action, FakeServer, Fault, ReceivedCommand, ServerConfig};
use brook_wire::{Compressor, Message, MsgFlags, SharedDoc, WireError};
use bson::{Bson, Document, doc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod proxy;
mod replset;

const DEADLINE: Duration = Duration::from_secs(10);

/// Run `f` and fail the test if it does not finish within the deadline.
async fn within<F: Future>(f: F) -> F::Output {
    match tokio::time::timeout(DEADLINE, f).await {
        Ok(out) => out,
        Err(_) => panic!("the test did not finish within {DEADLINE:?}: something hung"),
    }
}

async fn start(config: ServerConfig) -> FakeServer {
    FakeServer::start(config).await.expect("bind 127.0.0.1:0")
}

fn address(server: &FakeServer) -> ServerAddress {
    ServerAddress::new("127.0.0.1", server.port())
}

fn options(socket_timeout: Option<Duration>) -> ConnectionOptions {
    ConnectionOptions {
        connect_timeout: Duration::from_secs(5),
        socket_timeout,
        ..ConnectionOptions::default()
    }
}

async fn connect(server: &FakeServer) -> Connection {
    Connection::connect(&address(server), &options(None))
        .await
        .expect("handshake with the fake server")
}

async fn connect_with_timeout(server: &FakeServer, timeout: Duration) -> Connection {
    Connection::connect(&address(server), &options(Some(timeout)))
        .await
        .expect("handshake with the fake server")
}

fn run_body(doc: Document) -> RunCommand {
    RunCommand::new(doc)
}

/// After a fault: the connection is broken and the next command fails at once, without
/// touching the socket.
async fn assert_broken_and_fails_fast(conn: &mut Connection) {
    assert!(conn.is_broken(), "the connection must be marked broken");
    let started = Instant::now();
    let err = conn.run("admin", &Ping).await.unwrap_err();
    assert!(
        matches!(err, ConnError::Broken { .. }),
        "expected Broken, got {err:?}"
    );
    assert!(err.is_network());
    assert!(started.elapsed() < Duration::from_millis(500));
}

/// Ping after queueing `fault` for it; return the error.
async fn ping_with_fault(
    fault: Fault,
    socket_timeout: Option<Duration>,
) -> (ConnError, Connection, FakeServer) {
    let server = start(ServerConfig::default()).await;
    let mut conn = match socket_timeout {
        Some(t) => connect_with_timeout(&server, t).await,
        None => connect(&server).await,
    };
    server.push_action("ping", fault);
    let err = conn
        .run("admin", &Ping)
        .await
        .expect_err("the fault must fail the ping");
    (err, conn, server)
}

// ---------------------------------------------------------------------------------------
// The handshake

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_against_a_replica_set_primary() {
    within(async {
        let server = start(ServerConfig::default()).await;
        let conn = connect(&server).await;
        let d = conn.description();
        assert_eq!(d.server_kind, ServerKind::RsPrimary);
        assert_eq!(d.set_name.as_deref(), Some("rs0"));
        assert_eq!(d.max_wire_version, 21);
        assert_eq!(d.min_wire_version, 0);
        assert_eq!(d.max_message_size_bytes, 48_000_000);
        assert_eq!(d.max_bson_object_size, 16 * 1024 * 1024);
        assert_eq!(d.max_write_batch_size, 100_000);
        assert_eq!(
            d.logical_session_timeout,
            Some(Duration::from_secs(30 * 60))
        );
        assert_eq!(d.hosts, vec![server.host_port()]);
        assert_eq!(d.primary.as_deref(), Some(server.host_port().as_str()));
        assert_eq!(d.compressor, None);

        let raw = d.hello.raw.to_document().unwrap();
        for key in [
            "topologyVersion",
            "isWritablePrimary",
            "electionId",
            "lastWrite",
            "localTime",
            "$clusterTime",
            "operationTime",
        ] {
            assert!(raw.contains_key(key), "hello reply lacks {key}: {raw}");
        }
        assert_eq!(raw.get_f64("ok").unwrap(), 1.0);
        assert_eq!(raw.get_i32("connectionId").unwrap(), 1);

        let seen = server.commands();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].name, "hello");
        assert_eq!(seen[0].db, "admin");
        assert_eq!(seen[0].connection_id, 1);
        assert!(
            seen[0].body.contains_key("client"),
            "the handshake sends client metadata"
        );
        assert_eq!(server.connections_accepted(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_against_a_standalone() {
    within(async {
        let server = start(ServerConfig::standalone()).await;
        let mut conn = connect(&server).await;
        let d = conn.description();
        assert_eq!(d.server_kind, ServerKind::Standalone);
        assert_eq!(d.set_name, None);
        let raw = d.hello.raw.to_document().unwrap();
        assert!(!raw.contains_key("$clusterTime"));
        assert!(!raw.contains_key("setName"));
        assert!(raw.get_bool("isWritablePrimary").unwrap());
        // Default replies of a standalone carry no cluster time either.
        let reply = conn
            .run("admin", &run_body(doc! { "ping": 1 }))
            .await
            .unwrap();
        assert_eq!(reply.to_document().unwrap(), doc! { "ok": 1.0 });
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_reports_the_configured_wire_version_and_kind() {
    within(async {
        let server = start(ServerConfig::default().with_max_wire_version(8)).await;
        let conn = connect(&server).await;
        assert_eq!(conn.description().max_wire_version, 8);

        let mongos = start(ServerConfig::default().with_topology(Topology::Mongos)).await;
        let conn = connect(&mongos).await;
        assert_eq!(conn.description().server_kind, ServerKind::Mongos);

        let secondary = start(ServerConfig::default().with_topology(
            Topology::ReplicaSetSecondary {
                set_name: "rs1".to_owned(),
            },
        ))
        .await;
        let conn = connect(&secondary).await;
        assert_eq!(conn.description().server_kind, ServerKind::RsSecondary);
        assert_eq!(conn.description().set_name.as_deref(), Some("rs1"));
        assert_eq!(conn.description().max_wire_version, 21);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_is_negotiated_and_used_both_ways() {
    within(async {
        let server = start(ServerConfig::default().with_compression(["zstd", "snappy"])).await;
        let opts = ConnectionOptions {
            compressors: vec![Compressor::Snappy, Compressor::Zlib { level: None }],
            ..options(None)
        };
        let mut conn = Connection::connect(&address(&server), &opts).await.unwrap();
        assert_eq!(conn.description().compressor, Some(Compressor::Snappy));
        let hello = &server.commands()[0];
        assert_eq!(hello.compressor, None, "hello is never compressed");

        let reply = conn
            .run(
                "app",
                &run_body(doc! { "ping": 1, "comment": "x".repeat(500) }),
            )
            .await
            .unwrap();
        assert_eq!(reply.to_document().unwrap().get_f64("ok").unwrap(), 1.0);
        let ping = server.commands_named("ping").pop().unwrap();
        assert_eq!(ping.compressor, Some(Compressor::Snappy));
        assert_eq!(ping.db, "app");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_faults_fail_the_connect() {
    within(async {
        let server = start(ServerConfig::default()).await;
        server.push_action("hello", Fault::CloseWithoutReply);
        let err = Connection::connect(&address(&server), &options(None))
            .await
            .unwrap_err();
        assert!(matches!(err, ConnError::Closed { .. }), "{err:?}");

        server.push_action("hello", Action::error(18, "AuthenticationFailed", &[]));
        let err = Connection::connect(&address(&server), &options(None))
            .await
            .unwrap_err();
        assert!(matches!(err, ConnError::Handshake { .. }), "{err:?}");
        assert_eq!(err.server_error().and_then(|e| e.code), Some(18));

        // The queue is used up: the next connection succeeds.
        connect(&server).await;
        assert_eq!(server.connections_accepted(), 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_hello_gets_the_legacy_is_master() {
    within(async {
        let server = start(ServerConfig::default()).await;
        server.push_action("hello", Action::Reply(shapes::command_not_found("hello")));
        let conn = connect(&server).await;
        assert_eq!(conn.description().server_kind, ServerKind::RsPrimary);
        let names: Vec<String> = server.commands().into_iter().map(|c| c.name).collect();
        assert_eq!(names[0], "hello");
        assert!(names[1].eq_ignore_ascii_case("isMaster"), "{names:?}");
        let raw = conn.description().hello.raw.to_document().unwrap();
        assert!(raw.get_bool("ismaster").unwrap(), "legacy shape: {raw}");
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Recording and scripting

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_is_recorded_in_order() {
    within(async {
        let server = start(ServerConfig::default()).await;
        let mut a = connect(&server).await;
        let mut b = connect(&server).await;
        a.run("admin", &Ping).await.unwrap();
        b.run("shop", &run_body(doc! { "endSessions": [{ "id": 1 }] }))
            .await
            .unwrap();
        let docs = vec![
            SharedDoc::from_document(&doc! { "_id": 1, "a": "x" }).unwrap(),
            SharedDoc::from_document(&doc! { "_id": 2 }).unwrap(),
        ];
        let inserted = a.run("shop", &Insert::new("orders", docs)).await.unwrap();
        assert_eq!(inserted.n, 2);

        let seen = server.commands();
        let names: Vec<&str> = seen.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["hello", "hello", "ping", "endSessions", "insert"]);
        assert_eq!(seen[0].connection_id, 1);
        assert_eq!(seen[1].connection_id, 2);
        assert_eq!(seen[2].connection_id, 1);
        assert_eq!(seen[3].connection_id, 2);
        assert_eq!(seen[3].db, "shop");
        assert_eq!(seen[3].body.get_array("endSessions").unwrap().len(), 1);

        let insert = &seen[4];
        assert_eq!(insert.body.get_str("insert").unwrap(), "orders");
        assert_eq!(insert.sequences.len(), 1);
        assert_eq!(insert.sequences[0].identifier, "documents");
        assert_eq!(
            insert.sequence("documents").unwrap(),
            &[doc! { "_id": 1, "a": "x" }, doc! { "_id": 2 }]
        );
        assert!(!insert.more_to_come());
        assert!(!insert.checksum_present());
        assert!(seen.windows(2).all(|w| w[0].request_id != w[1].request_id));

        assert_eq!(server.commands_named("ping").len(), 1);
        server.clear_commands();
        assert!(server.commands().is_empty());
        assert_eq!(server.connections_accepted(), 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_typed_and_leave_the_connection_usable() {
    within(async {
        let server = start(ServerConfig::default()).await;
        let mut conn = connect(&server).await;
        server.push_actions(
            "ping",
            [
                Action::error(
                    43,
                    "CursorNotFound",
                    &[shapes::RESUMABLE_CHANGE_STREAM_ERROR],
                ),
                Action::error_with_message(
                    91,
                    "ShutdownInProgress",
                    "the server is shutting down",
                    &[
                        shapes::RETRYABLE_WRITE_ERROR,
                        shapes::RESUMABLE_CHANGE_STREAM_ERROR,
                    ],
                ),
            ],
        );
        assert_eq!(server.queued("ping"), 2);

        let err = conn.run("admin", &Ping).await.unwrap_err();
        let e = err.server_error().expect("a server error");
        assert_eq!(e.code, Some(43));
        assert_eq!(e.code_name.as_deref(), Some("CursorNotFound"));
        assert_eq!(e.labels, vec!["ResumableChangeStreamError".to_owned()]);
        assert!(!err.is_network());
        assert!(!conn.is_broken());
        assert_eq!(err.wire_version(), Some(21));

        let err = conn.run("admin", &Ping).await.unwrap_err();
        let e = err.server_error().unwrap();
        assert_eq!(e.code, Some(91));
        assert_eq!(e.message, "the server is shutting down");
        assert!(e.has_label("RetryableWriteError"));
        assert!(e.has_label("ResumableChangeStreamError"));
        assert!(!conn.is_broken());

        // The queue is empty: defaults again.
        conn.run("admin", &Ping).await.unwrap();
        assert_eq!(server.queued("ping"), 0);

        // An unknown command gets the server's CommandNotFound.
        let err = conn
            .run("admin", &run_body(doc! { "frobnicate": 1 }))
            .await
            .unwrap_err();
        assert_eq!(err.server_error().and_then(|e| e.code), Some(59));
        assert!(!conn.is_broken());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_errors_come_back_in_the_reply() {
    within(async {
        let server = start(ServerConfig::default()).await;
        let mut conn = connect(&server).await;
        let reply = shapes::WriteReply::new(1)
            .write_error(shapes::WriteErrorShape::duplicate_key(1, "shop.orders", 1))
            .write_concern_error(shapes::WriteConcernErrorShape::wtimeout())
            .at(server.cluster_time())
            .to_document();
        server.push_action("insert", Action::reply(reply));
        let docs = vec![
            SharedDoc::from_document(&doc! { "_id": 1 }).unwrap(),
            SharedDoc::from_document(&doc! { "_id": 1 }).unwrap(),
        ];
        let r = conn
            .run("shop", &Insert::new("orders", docs))
            .await
            .unwrap();
        assert_eq!(r.n, 1);
        assert_eq!(r.write_errors.len(), 1);
        assert_eq!(r.write_errors[0].code, 11000);
        assert_eq!(r.write_errors[0].index, 1);
        assert_eq!(r.write_errors[0].code_name.as_deref(), Some("DuplicateKey"));
        let wce = r.write_concern_error.expect("the write concern error");
        assert_eq!(wce.code, 64);
        assert_eq!(wce.code_name.as_deref(), Some("WriteConcernFailed"));
        assert!(!conn.is_broken());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handler_sees_every_request_and_queues_come_first() {
    within(async {
        let server = start(
            ServerConfig::default().with_handler(|cmd: &ReceivedCommand| match cmd.name.as_str() {
                "count" => Action::reply(doc! {
                    "n": cmd.body.get_str("count").map(str::len).unwrap_or(0) as i32,
                    "ok": 1.0,
                }),
                _ => Action::Default,
            }),
        )
        .await;
        let mut conn = connect(&server).await;
        let reply = conn
            .run("db", &run_body(doc! { "count": "abcd" }))
            .await
            .unwrap();
        assert_eq!(reply.to_document().unwrap().get_i32("n").unwrap(), 4);

        server.push_action("count", Action::reply(doc! { "n": 99, "ok": 1.0 }));
        let reply = conn
            .run("db", &run_body(doc! { "count": "abcd" }))
            .await
            .unwrap();
        assert_eq!(reply.to_document().unwrap().get_i32("n").unwrap(), 99);

        server.set_handler(|_: &ReceivedCommand| Action::error(13, "Unauthorized", &[]));
        let err = conn.run("db", &Ping).await.unwrap_err();
        assert_eq!(err.server_error().and_then(|e| e.code), Some(13));
        server.clear_handler();
        conn.run("db", &Ping).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_change_stream_cursor_and_scripted_get_mores() {
    within(async {
        let server = start(ServerConfig::default()).await;
        let mut conn = connect(&server).await;
        let reply = conn
            .run(
                "shop",
                &run_body(doc! {
                    "aggregate": "orders",
                    "pipeline": [{ "$changeStream": {} }],
                    "cursor": {},
                }),
            )
            .await
            .unwrap()
            .to_document()
            .unwrap();
        let cursor = reply.get_document("cursor").unwrap();
        let id = cursor.get_i64("id").unwrap();
        assert_ne!(id, 0);
        assert_eq!(cursor.get_str("ns").unwrap(), "shop.orders");
        assert!(cursor.get_array("firstBatch").unwrap().is_empty());
        let pbrt = cursor.get_document("postBatchResumeToken").unwrap();
        assert!(pbrt.get_str("_data").unwrap().starts_with("82"));
        assert!(reply.contains_key("$clusterTime"));
        assert!(reply.contains_key("operationTime"));

        // Two scripted getMores, then the default: an empty batch after maxTimeMS.
        let ts = server.cluster_time();
        let event = shapes::insert_event(ts, "shop.orders", doc! { "_id": 7 });
        server.push_actions(
            "getMore",
            [
                Action::cursor(
                    id,
                    "shop.orders",
                    BatchKind::Next,
                    vec![event.clone()],
                    Some(shapes::post_batch_resume_token(ts)),
                    Some(ts),
                ),
                Action::error(
                    shapes::codes::NOT_WRITABLE_PRIMARY.0,
                    shapes::codes::NOT_WRITABLE_PRIMARY.1,
                    &[shapes::RESUMABLE_CHANGE_STREAM_ERROR],
                ),
            ],
        );
        let get_more = doc! { "getMore": id, "collection": "orders", "maxTimeMS": 20i64 };
        let first = conn.run("shop", &run_body(get_more.clone())).await.unwrap();
        let first = first.to_document().unwrap();
        let batch = first
            .get_document("cursor")
            .unwrap()
            .get_array("nextBatch")
            .unwrap();
        assert_eq!(batch, &vec![Bson::Document(event)]);

        let err = conn
            .run("shop", &run_body(get_more.clone()))
            .await
            .unwrap_err();
        assert!(
            err.server_error()
                .unwrap()
                .has_label("ResumableChangeStreamError")
        );

        let started = Instant::now();
        let empty = conn.run("shop", &run_body(get_more.clone())).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(15));
        let empty = empty.to_document().unwrap();
        let cursor = empty.get_document("cursor").unwrap();
        assert!(cursor.get_array("nextBatch").unwrap().is_empty());
        assert!(cursor.contains_key("postBatchResumeToken"));

        let killed = conn
            .run(
                "shop",
                &run_body(doc! { "killCursors": "orders", "cursors": [id, 12345i64] }),
            )
            .await
            .unwrap()
            .to_document()
            .unwrap();
        assert_eq!(
            killed.get_array("cursorsKilled").unwrap(),
            &vec![Bson::Int64(id)]
        );
        assert_eq!(
            killed.get_array("cursorsNotFound").unwrap(),
            &vec![Bson::Int64(12345)]
        );

        // Killed: a getMore on it is now CursorNotFound.
        let err = conn.run("shop", &run_body(get_more)).await.unwrap_err();
        assert_eq!(err.server_error().and_then(|e| e.code), Some(43));
        assert_eq!(server.commands_named("getMore").len(), 4);
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// moreToCome, both ways

fn message(body: Document, flags: MsgFlags) -> Message {
    let mut msg = Message::command(
        brook_conn::next_request_id(),
        SharedDoc::from_document(&body).unwrap(),
    );
    msg.flags = flags;
    msg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_flagged_more_to_come_stream_without_requests() {
    within(async {
        let server = start(ServerConfig::default()).await;
        let mut conn = connect(&server).await;
        server.push_action(
            "getMore",
            Action::MoreToCome(vec![
                doc! { "seq": 1, "ok": 1.0 },
                doc! { "seq": 2, "ok": 1.0 },
                doc! { "seq": 3, "ok": 1.0 },
            ]),
        );
        let request = message(
            doc! { "getMore": 5i64, "collection": "c", "$db": "db" },
            MsgFlags::EXHAUST_ALLOWED,
        );
        let first = conn.send(&request).await.unwrap().expect("a reply");
        assert_eq!(first.response_to, request.request_id);
        assert!(first.flags.contains(MsgFlags::MORE_TO_COME));
        assert_eq!(first.body.to_document().unwrap().get_i32("seq").unwrap(), 1);
        assert!(conn.has_more_to_come());

        let second = conn.receive_more().await.unwrap();
        assert!(second.flags.contains(MsgFlags::MORE_TO_COME));
        assert_eq!(
            second.body.to_document().unwrap().get_i32("seq").unwrap(),
            2
        );
        let third = conn.receive_more().await.unwrap();
        assert!(!third.flags.contains(MsgFlags::MORE_TO_COME));
        assert_eq!(third.body.to_document().unwrap().get_i32("seq").unwrap(), 3);
        assert!(!conn.has_more_to_come());
        conn.run("admin", &Ping).await.unwrap();

        let recorded = server.commands_named("getMore");
        assert_eq!(recorded.len(), 1);
        assert!(recorded[0].exhaust_allowed());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_flagged_more_to_come_get_no_reply() {
    within(async {
        let server = start(ServerConfig::default()).await;
        let mut conn = connect(&server).await;
        // Even an action that would reply sends nothing for a moreToCome request.
        server.push_action("insert", Action::reply(doc! { "n": 1, "ok": 1.0 }));
        let request = message(
            doc! { "insert": "c", "documents": [{ "_id": 1 }], "writeConcern": { "w": 0 }, "$db": "db" },
            MsgFlags::MORE_TO_COME,
        );
        assert!(conn.send(&request).await.unwrap().is_none());
        assert!(server.wait_for_commands(2, Duration::from_secs(5)).await);
        let insert = server.commands_named("insert").pop().unwrap();
        assert!(insert.more_to_come());
        // Had the server replied, this ping would read the insert's reply and fail.
        conn.run("admin", &Ping).await.unwrap();
        assert!(!conn.is_broken());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_checksums_are_verified_and_recorded() {
    within(async {
        let server = start(ServerConfig::default()).await;
        let mut conn = connect(&server).await;
        let request = message(
            doc! { "ping": 1, "$db": "admin" },
            MsgFlags::CHECKSUM_PRESENT,
        );
        let reply = conn.send(&request).await.unwrap().expect("a reply");
        assert_eq!(reply.response_to, request.request_id);
        let ping = server.commands_named("ping").pop().unwrap();
        assert!(ping.checksum_present());
        assert_eq!(ping.request_id, request.request_id);
        assert!(server.decode_failures().is_empty());
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Faults: each yields the right typed error, breaks the connection, and never hangs

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_close_without_reply() {
    within(async {
        let (err, mut conn, _server) = ping_with_fault(Fault::CloseWithoutReply, None).await;
        assert!(
            matches!(
                err,
                ConnError::Closed {
                    mid_message: false,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.is_network());
        assert_eq!(err.wire_version(), Some(21));
        assert_broken_and_fails_fast(&mut conn).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_close_mid_reply() {
    within(async {
        let (err, mut conn, _server) = ping_with_fault(Fault::CloseMidReply, None).await;
        assert!(
            matches!(
                err,
                ConnError::Closed {
                    mid_message: true,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_broken_and_fails_fast(&mut conn).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_partial_frame_then_stall_times_out() {
    within(async {
        let fault = Fault::PartialThenStall {
            bytes: 10,
            stall: Duration::from_secs(30),
        };
        let started = Instant::now();
        let (err, mut conn, _server) =
            ping_with_fault(fault, Some(Duration::from_millis(300))).await;
        assert!(err.is_timeout(), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_broken_and_fails_fast(&mut conn).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_partial_frame_then_close_is_closed_mid_message() {
    within(async {
        let fault = Fault::PartialThenStall {
            bytes: 25,
            stall: Duration::from_millis(50),
        };
        let (err, mut conn, _server) = ping_with_fault(fault, None).await;
        assert!(
            matches!(
                err,
                ConnError::Closed {
                    mid_message: true,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_broken_and_fails_fast(&mut conn).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_declared_length_over_the_limit() {
    within(async {
        for declared in [48_000_001, i32::MAX] {
            let (err, mut conn, _server) =
                ping_with_fault(Fault::LengthOverLimit { declared }, None).await;
            assert!(
                matches!(
                    &err,
                    ConnError::Wire { source: WireError::MessageTooLarge { len, .. }, .. }
                        if *len == declared as usize
                ),
                "{err:?}"
            );
            assert!(!err.is_network());
            assert_broken_and_fails_fast(&mut conn).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_declared_length_below_sixteen() {
    within(async {
        let (err, mut conn, _server) =
            ping_with_fault(Fault::LengthBelowMinimum { declared: 8 }, None).await;
        assert!(
            matches!(
                err,
                ConnError::Wire {
                    source: WireError::MessageTooShort { len: 8 },
                    ..
                }
            ),
            "{err:?}"
        );
        assert_broken_and_fails_fast(&mut conn).await;

        let (err, mut conn, _server) =
            ping_with_fault(Fault::LengthBelowMinimum { declared: -1 }, None).await;
        assert!(
            matches!(
                err,
                ConnError::Wire {
                    source: WireError::NegativeMessageLength { len: -1 },
                    ..
                }
            ),
            "{err:?}"
        );
        assert_broken_and_fails_fast(&mut conn).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_bad_bson_length_overruns_the_section() {
    within(async {
        let (err, mut conn, _server) = ping_with_fault(Fault::BadBson, None).await;
        assert!(
            matches!(
                err,
                ConnError::Wire {
                    source: WireError::DocumentOverrunsSection { .. }
                        | WireError::InvalidDocumentLength { .. }
                        | WireError::SectionOverrun { .. },
                    ..
                }
            ),
            "{err:?}"
        );
        assert_broken_and_fails_fast(&mut conn).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_unknown_section_kind() {
    within(async {
        let (err, mut conn, _server) = ping_with_fault(Fault::UnknownSectionKind(7), None).await;
        assert!(
            matches!(
                err,
                ConnError::Wire {
                    source: WireError::SectionKindUnknown(7),
                    ..
                }
            ),
            "{err:?}"
        );
        assert_broken_and_fails_fast(&mut conn).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_bad_checksum() {
    within(async {
        let (err, mut conn, _server) = ping_with_fault(Fault::BadChecksum, None).await;
        assert!(
            matches!(
                err,
                ConnError::Wire {
                    source: WireError::ChecksumMismatch { .. },
                    ..
                }
            ),
            "{err:?}"
        );
        assert_broken_and_fails_fast(&mut conn).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_checksums_are_accepted() {
    within(async {
        let server = start(ServerConfig::default().with_checksum_replies(true)).await;
        let mut conn = connect(&server).await;
        conn.run("admin", &Ping).await.unwrap();
        conn.run("admin", &Ping).await.unwrap();
        assert!(!conn.is_broken());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_wrong_response_to() {
    within(async {
        let (err, mut conn, _server) = ping_with_fault(Fault::WrongResponseTo, None).await;
        match err {
            ConnError::ResponseToMismatch {
                expected, actual, ..
            } => assert_eq!(actual, expected.wrapping_add(1000)),
            other => panic!("expected ResponseToMismatch, got {other:?}"),
        }
        assert_broken_and_fails_fast(&mut conn).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_unknown_required_flag_bit() {
    within(async {
        let (err, mut conn, _server) =
            ping_with_fault(Fault::UnknownRequiredFlag(1 << 3), None).await;
        assert!(
            matches!(
                err,
                ConnError::Wire {
                    source: WireError::UnknownRequiredFlags(8),
                    ..
                }
            ),
            "{err:?}"
        );
        assert_broken_and_fails_fast(&mut conn).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_optional_flag_bits_are_ignored() {
    within(async {
        let server = start(ServerConfig::default()).await;
        let mut conn = connect(&server).await;
        server.push_action("ping", Fault::UnknownRequiredFlag(1 << 20));
        conn.run("admin", &Ping).await.unwrap();
        assert!(!conn.is_broken());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_then_reply() {
    within(async {
        let server = start(ServerConfig::default()).await;
        let mut conn = connect_with_timeout(&server, Duration::from_secs(3)).await;
        server.push_action(
            "ping",
            Action::delay(Duration::from_millis(200), Action::ok()),
        );
        let started = Instant::now();
        conn.run("admin", &Ping).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(190));
        assert!(!conn.is_broken());

        // Slower than the socket timeout: a timeout, and a broken connection.
        conn.set_socket_timeout(Some(Duration::from_millis(100)));
        server.push_action("ping", Action::delay(Duration::from_secs(5), Action::ok()));
        let started = Instant::now();
        let err = conn.run("admin", &Ping).await.unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_broken_and_fails_fast(&mut conn).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_forever_times_out() {
    within(async {
        let started = Instant::now();
        let (err, mut conn, server) =
            ping_with_fault(Fault::Hang, Some(Duration::from_millis(250))).await;
        assert!(err.is_timeout(), "{err:?}");
        assert!(matches!(
            err,
            ConnError::Timeout {
                operation: "operation",
                ..
            }
        ));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_broken_and_fails_fast(&mut conn).await;
        // The hung connection is still open on the server until the client goes away.
        assert_eq!(server.open_connections(), 1);
        drop(conn);
        let deadline = Instant::now() + Duration::from_secs(5);
        while server.open_connections() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(server.open_connections(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_bytes_are_sent_as_given() {
    within(async {
        let server = start(ServerConfig::default()).await;
        let mut conn = connect(&server).await;
        // A frame with an unsupported opcode (OP_REPLY = 1).
        let mut raw = Vec::new();
        raw.extend_from_slice(&36i32.to_le_bytes());
        raw.extend_from_slice(&1i32.to_le_bytes());
        raw.extend_from_slice(&0i32.to_le_bytes());
        raw.extend_from_slice(&1i32.to_le_bytes());
        raw.extend_from_slice(&[0u8; 20]);
        server.push_action("ping", Action::Raw(raw));
        let err = conn.run("admin", &Ping).await.unwrap_err();
        assert!(
            matches!(
                err,
                ConnError::Wire {
                    source: WireError::UnsupportedOpCode(1),
                    ..
                }
            ),
            "{err:?}"
        );
        assert_broken_and_fails_fast(&mut conn).await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Client garbage, shutdown

async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    // The server closes after garbage: read_to_end finishes (an error counts as closed).
    let _closed = stream.read_to_end(&mut out).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_garbage_is_recorded_and_closes_only_that_connection() {
    within(async {
        let server = start(ServerConfig::default()).await;
        let mut healthy = connect(&server).await;

        let cases: Vec<Vec<u8>> = vec![
            // A declared length below 16.
            8i32.to_le_bytes().to_vec(),
            // A declared length far over the limit: refused before the body arrives.
            i32::MAX.to_le_bytes().to_vec(),
            // A valid header with an unknown opcode.
            [16i32, 1, 0, 42]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            // OP_MSG with an unknown section kind.
            {
                let mut f: Vec<u8> = [26i32, 1, 0, 2013]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect();
                f.extend_from_slice(&0u32.to_le_bytes());
                f.push(9);
                f.extend_from_slice(&[5, 0, 0, 0, 0]);
                f
            },
            // OP_MSG whose body is not BSON at all.
            {
                let mut f: Vec<u8> = [30i32, 1, 0, 2013]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect();
                f.extend_from_slice(&0u32.to_le_bytes());
                f.push(0);
                f.extend_from_slice(&[9, 0, 0, 0, 0xff, b'a', 0, 1, 0]);
                f
            },
            // OP_MSG with a checksum that does not match.
            {
                let body = doc! { "ping": 1, "$db": "admin" }.to_vec().unwrap();
                let len = 16 + 4 + 1 + body.len() as i32 + 4;
                let mut f: Vec<u8> = [len, 1, 0, 2013]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect();
                f.extend_from_slice(&1u32.to_le_bytes());
                f.push(0);
                f.extend_from_slice(&body);
                f.extend_from_slice(&0xdead_beef_u32.to_le_bytes());
                f
            },
        ];
        let count = cases.len();
        for bytes in cases {
            let mut raw = TcpStream::connect(server.addr()).await.unwrap();
            raw.write_all(&bytes).await.unwrap();
            let answer = read_to_end(&mut raw).await;
            assert!(answer.is_empty(), "no reply to garbage");
        }
        let failures = server.decode_failures();
        assert_eq!(failures.len(), count, "{failures:?}");
        assert!(
            failures
                .iter()
                .all(|f| f.connection_id > 1 && !f.message.is_empty())
        );
        // Nothing was recorded as a command, and the other connection is unaffected.
        assert_eq!(server.commands().len(), 1);
        healthy.run("admin", &Ping).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_every_connection_and_the_listener() {
    within(async {
        let server = start(ServerConfig::default()).await;
        let mut a = connect(&server).await;
        let mut b = connect(&server).await;
        assert_eq!(server.open_connections(), 2);
        server.shutdown().await;
        assert_eq!(server.open_connections(), 0);
        for conn in [&mut a, &mut b] {
            let err = conn.run("admin", &Ping).await.unwrap_err();
            assert!(err.is_network(), "{err:?}");
            assert!(conn.is_broken());
        }
        let refused = Connection::connect(&address(&server), &options(None)).await;
        assert!(refused.is_err());
        // Records survive the shutdown; a second shutdown is harmless.
        assert_eq!(server.commands_named("hello").len(), 2);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_stops_the_server() {
    within(async {
        let server = start(ServerConfig::default()).await;
        let addr = address(&server);
        let mut conn = connect(&server).await;
        server.push_action("ping", Fault::Hang);
        drop(server);
        // The hung connection is closed by the drop: no timeout needed to get out.
        let err = conn.run("admin", &Ping).await.unwrap_err();
        assert!(err.is_network(), "{err:?}");
        let mut refused = false;
        for _ in 0..50 {
            if Connection::connect(&addr, &options(None)).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(refused, "the listener must be gone after drop");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uri_and_addresses() {
    within(async {
        let server = start(ServerConfig::default()).await;
        assert_eq!(
            server.uri(),
            format!("mongodb://127.0.0.1:{}/", server.port())
        );
        assert_eq!(server.addr().ip().to_string(), "127.0.0.1");
        assert_eq!(server.config().hello.me, server.host_port());
    })
    .await;
}

/// An OP_QUERY frame: `query` on `collection`, numberToReturn -1.
fn op_query(request_id: i32, collection: &str, query: &Document) -> Vec<u8> {
    let body = query.to_vec().unwrap();
    let len = 16 + 4 + collection.len() + 1 + 8 + body.len();
    let mut f = Vec::new();
    f.extend_from_slice(&i32::try_from(len).unwrap().to_le_bytes());
    f.extend_from_slice(&request_id.to_le_bytes());
    f.extend_from_slice(&0i32.to_le_bytes());
    f.extend_from_slice(&2004i32.to_le_bytes());
    f.extend_from_slice(&0i32.to_le_bytes()); // flags
    f.extend_from_slice(collection.as_bytes());
    f.push(0);
    f.extend_from_slice(&0i32.to_le_bytes()); // numberToSkip
    f.extend_from_slice(&(-1i32).to_le_bytes()); // numberToReturn
    f.extend_from_slice(&body);
    f
}

/// Reads one OP_REPLY: (responseTo, numberReturned, the document).
async fn read_op_reply(socket: &mut TcpStream) -> (i32, i32, Document) {
    let mut header = [0u8; 16];
    socket.read_exact(&mut header).await.unwrap();
    let word = |b: &[u8], at: usize| i32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    assert_eq!(word(&header, 12), 1, "OP_REPLY");
    let len = usize::try_from(word(&header, 0)).unwrap();
    let mut rest = vec![0u8; len - 16];
    socket.read_exact(&mut rest).await.unwrap();
    let returned = word(&rest, 16);
    let doc = Document::from_reader(&rest[20..]).unwrap();
    (word(&header, 8), returned, doc)
}

/// Drivers without serverApi (Node's, older ones) open with a legacy OP_QUERY isMaster:
/// the fake server answers it with an OP_REPLY as MongoDB does, records it like any
/// command, refuses other OP_QUERY commands with 352, and the connection then speaks
/// OP_MSG.
#[tokio::test]
async fn a_legacy_op_query_handshake_is_answered() {
    within(async {
        let server = start(ServerConfig::replica_set("rs0")).await;
        let mut socket = TcpStream::connect(server.addr()).await.unwrap();
        let hello = doc! { "$query": { "isMaster": 1, "helloOk": true }, "$readPreference": { "mode": "primaryPreferred" } };
        socket.write_all(&op_query(7, "admin.$cmd", &hello)).await.unwrap();
        let (response_to, returned, reply) = read_op_reply(&mut socket).await;
        assert_eq!((response_to, returned), (7, 1));
        assert!(reply.get_bool("ismaster").unwrap(), "{reply}");
        assert_eq!(reply.get_str("setName").unwrap(), "rs0");
        assert!(reply.get_i32("maxWireVersion").unwrap() >= 17);
        let seen = server.commands_named("isMaster");
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].db, "admin");

        socket
            .write_all(&op_query(8, "app.$cmd", &doc! { "find": "items" }))
            .await
            .unwrap();
        let (response_to, _, reply) = read_op_reply(&mut socket).await;
        assert_eq!(response_to, 8);
        assert_eq!(reply.get_i32("code").unwrap(), 352, "{reply}");

        // The same connection goes on with OP_MSG.
        let body = doc! { "ping": 1, "$db": "admin" }.to_vec().unwrap();
        let mut frame = Vec::new();
        frame.extend_from_slice(&(21 + i32::try_from(body.len()).unwrap()).to_le_bytes());
        frame.extend_from_slice(&9i32.to_le_bytes());
        frame.extend_from_slice(&0i32.to_le_bytes());
        frame.extend_from_slice(&2013i32.to_le_bytes());
        frame.extend_from_slice(&0u32.to_le_bytes());
        frame.push(0);
        frame.extend_from_slice(&body);
        socket.write_all(&frame).await.unwrap();
        let mut header = [0u8; 16];
        socket.read_exact(&mut header).await.unwrap();
        assert_eq!(i32::from_le_bytes(header[12..16].try_into().unwrap()), 2013);
        assert_eq!(i32::from_le_bytes(header[8..12].try_into().unwrap()), 9);
        assert!(server.decode_failures().is_empty());
    })
    .await;
}
