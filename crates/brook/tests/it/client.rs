//! The whole client against brook-testkit's fake server.

use std::future::IntoFuture;
use std::time::Duration;

use brook::{Client, ClientOptions, ServerKind};
use brook_testkit::shapes::{BatchKind, Topology, WIRE_VERSION_7_0};
use brook_testkit::{Action, FakeServer, Fault, ReceivedCommand, ServerConfig};
use bson::{Bson, Document, RawDocumentBuf, doc};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};

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

/// The commands the server got, without the handshakes.
fn commands(server: &FakeServer) -> Vec<ReceivedCommand> {
    server
        .commands()
        .into_iter()
        .filter(|c| !matches!(c.name.as_str(), "hello" | "isMaster" | "ismaster"))
        .collect()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Item {
    n: i32,
    tag: String,
}

#[tokio::test]
async fn run_command_adds_db_and_lsid_and_returns_the_reply() {
    let fake = server(
        ServerConfig::replica_set("rs0").with_handler(|cmd: &ReceivedCommand| {
            match cmd.name.as_str() {
                "ping" => Action::reply(doc! { "ok": 1.0, "pong": true }),
                _ => Action::Default,
            }
        }),
    )
    .await;
    let client = client_for(&fake, "&appName=brook-it").await;
    assert_eq!(client.server_kind(), ServerKind::RsPrimary);
    assert_eq!(client.max_wire_version(), WIRE_VERSION_7_0);
    assert_eq!(
        client.logical_session_timeout(),
        Some(Duration::from_secs(30 * 60))
    );
    let command = doc! { "ping": 1 };
    let reply = client
        .database("app")
        .run_command(command.clone())
        .await
        .unwrap();
    assert_eq!(reply.get_bool("pong").ok(), Some(true));
    assert_eq!(command, doc! { "ping": 1 });

    let sent = commands(&fake);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].name, "ping");
    assert_eq!(sent[0].db, "app");
    let lsid = sent[0].body.get_document("lsid").expect("lsid attached");
    match lsid.get("id") {
        Some(Bson::Binary(b)) => {
            assert_eq!(b.subtype, bson::spec::BinarySubtype::Uuid);
            assert_eq!(b.bytes.len(), 16);
        }
        other => panic!("lsid.id is {other:?}"),
    }
    // The handshake carried the application name.
    let hello = fake.commands().into_iter().next().unwrap();
    assert_eq!(
        hello
            .body
            .get_document("client")
            .and_then(|c| c.get_document("application"))
            .and_then(|a| a.get_str("name"))
            .ok(),
        Some("brook-it")
    );
}

#[tokio::test]
async fn sessions_are_reused_and_absent_without_session_support() {
    let fake = server(ServerConfig::replica_set("rs0")).await;
    let client = client_for(&fake, "").await;
    let db = client.database("app");
    db.run_command(doc! { "ping": 1 }).await.unwrap();
    db.run_command(doc! { "ping": 1 }).await.unwrap();
    let sent = commands(&fake);
    assert_eq!(
        sent[0].body.get_document("lsid").unwrap(),
        sent[1].body.get_document("lsid").unwrap(),
        "sequential operations reuse the pooled session"
    );

    let mut config = ServerConfig::standalone();
    config.hello.logical_session_timeout_minutes = None;
    let plain = server(config).await;
    let client = client_for(&plain, "").await;
    client
        .database("x")
        .run_command(doc! { "ping": 1 })
        .await
        .unwrap();
    assert!(!commands(&plain)[0].body.contains_key("lsid"));
}

#[tokio::test]
async fn insert_one_adds_an_id_without_touching_the_value() {
    let fake = server(ServerConfig::replica_set("rs0")).await;
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Item>("items");
    let item = Item {
        n: 1,
        tag: "a".into(),
    };
    let res = coll.insert_one(&item).await.unwrap();
    let Bson::ObjectId(oid) = res.inserted_id else {
        panic!("expected an ObjectId, got {:?}", res.inserted_id)
    };
    let sent = commands(&fake);
    assert_eq!(sent[0].name, "insert");
    assert_eq!(sent[0].body.get_str("insert").ok(), Some("items"));
    assert_eq!(sent[0].body.get_bool("ordered").ok(), Some(true));
    let docs = sent[0].sequence("documents").expect("documents sequence");
    assert_eq!(docs, [doc! { "_id": oid, "n": 1, "tag": "a" }]);

    // A raw collection keeps a given _id.
    let raw = client.database("app").collection_raw("items");
    let mut given = RawDocumentBuf::new();
    given.append(bson::raw::cstr!("_id"), 5);
    let res = raw.insert_one(given).await.unwrap();
    assert_eq!(res.inserted_id, Bson::Int32(5));
}

fn item_docs(count: i32) -> Vec<Item> {
    (0..count)
        .map(|n| Item {
            n,
            tag: "x".repeat(1000),
        })
        .collect()
}

#[tokio::test]
async fn insert_many_splits_by_count_and_by_size() {
    let mut config = ServerConfig::replica_set("rs0");
    config.hello.max_write_batch_size = 3;
    let fake = server(config).await;
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Item>("items");
    let res = coll.insert_many(item_docs(7)).await.unwrap();
    assert_eq!(res.inserted_ids.len(), 7);
    let sizes: Vec<usize> = commands(&fake)
        .iter()
        .map(|c| c.sequence("documents").map_or(0, <[Document]>::len))
        .collect();
    assert_eq!(sizes, [3, 3, 1]);
    let all: Vec<Bson> = commands(&fake)
        .iter()
        .flat_map(|c| c.sequence("documents").unwrap_or_default().to_vec())
        .map(|d| d.get("_id").cloned().unwrap())
        .collect();
    assert_eq!(all, res.inserted_ids.values().cloned().collect::<Vec<_>>());

    // By size: the budget is maxMessageSizeBytes - 16 KiB (here 5,000 bytes), so
    // documents of ~1,040 bytes go four to a batch.
    let mut config = ServerConfig::replica_set("rs0");
    config.hello.max_bson_object_size = 2_000;
    config.hello.max_message_size_bytes = 16 * 1024 + 5_000;
    let fake = server(config).await;
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Item>("items");
    coll.insert_many(item_docs(10)).await.unwrap();
    let sizes: Vec<usize> = commands(&fake)
        .iter()
        .map(|c| c.sequence("documents").map_or(0, <[Document]>::len))
        .collect();
    assert_eq!(sizes, [4, 4, 2]);

    // A document over maxBsonObjectSize is refused before anything is sent.
    let big = Item {
        n: 0,
        tag: "y".repeat(3_000),
    };
    fake.clear_commands();
    let err = coll.insert_many([big]).await.unwrap_err();
    assert!(err.is_invalid_argument(), "{err}");
    assert!(commands(&fake).is_empty());
}

fn write_error_reply(n: i32, index: i32) -> Action {
    Action::reply(doc! {
        "n": n,
        "writeErrors": [{ "index": index, "code": 11000, "codeName": "DuplicateKey", "errmsg": "E11000 duplicate key" }],
        "ok": 1.0,
    })
}

#[tokio::test]
async fn ordered_insert_many_stops_at_the_first_write_error() {
    let mut config = ServerConfig::replica_set("rs0");
    config.hello.max_write_batch_size = 2;
    let fake = server(config).await;
    fake.push_actions("insert", [write_error_reply(1, 1)]);
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Item>("items");
    let err = coll.insert_many(item_docs(5)).await.unwrap_err();
    assert!(err.is_server_error());
    assert_eq!(err.code(), Some(11000));
    assert_eq!(err.code_name(), Some("DuplicateKey"));
    assert_eq!(err.write_errors().len(), 1);
    assert_eq!(err.write_errors()[0].index, 1);
    assert_eq!(err.wire_version(), Some(WIRE_VERSION_7_0));
    assert_eq!(commands(&fake).len(), 1, "no batch after the failed one");

    // Unordered: every batch is sent; indices are relative to the whole input.
    fake.clear_commands();
    fake.push_actions("insert", [Action::Default, write_error_reply(1, 0)]);
    let err = coll
        .insert_many(item_docs(5))
        .ordered(false)
        .await
        .unwrap_err();
    let sent = commands(&fake);
    assert_eq!(sent.len(), 3);
    assert!(
        sent.iter()
            .all(|c| c.body.get_bool("ordered").ok() == Some(false))
    );
    assert_eq!(err.write_errors()[0].index, 2);
}

#[tokio::test]
async fn update_and_delete_report_typed_results() {
    let fake = server(ServerConfig::replica_set("rs0")).await;
    fake.push_actions(
        "update",
        [
            Action::reply(doc! { "n": 1, "nModified": 1, "ok": 1.0 }),
            Action::reply(
                doc! { "n": 1, "nModified": 0, "upserted": [{ "index": 0, "_id": 9 }], "ok": 1.0 },
            ),
        ],
    );
    fake.push_actions("delete", [Action::reply(doc! { "n": 1, "ok": 1.0 })]);
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Document>("c");
    let r = coll
        .update_one(doc! { "a": 1 }, doc! { "$set": { "b": 2 } })
        .await
        .unwrap();
    assert_eq!((r.matched_count, r.modified_count), (1, 1));
    assert_eq!(r.upserted_id, None);
    let r = coll
        .update_one(doc! { "a": 2 }, doc! { "$set": { "b": 2 } })
        .upsert(true)
        .await
        .unwrap();
    assert_eq!(r.upserted_id, Some(Bson::Int32(9)));
    assert_eq!(r.matched_count, 0);
    let d = coll.delete_one(doc! { "a": 1 }).await.unwrap();
    assert_eq!(d.deleted_count, 1);
    // No write concern in the URI: none is sent.
    assert!(
        commands(&fake)
            .iter()
            .all(|c| !c.body.contains_key("writeConcern"))
    );

    let sent = commands(&fake);
    let upd = sent[1].sequence("updates").expect("updates sequence");
    assert_eq!(upd[0].get_bool("upsert").ok(), Some(true));
    assert!(!upd[0].get_bool("multi").unwrap_or(false));
    let del = sent[2].sequence("deletes").expect("deletes sequence");
    assert_eq!(del[0].get_i32("limit").ok(), Some(1));
}

fn items(range: std::ops::Range<i32>) -> Vec<Document> {
    range.map(|n| doc! { "n": n, "tag": "t" }).collect()
}

#[tokio::test]
async fn find_follows_the_getmore_chain_with_one_session() {
    let fake = server(ServerConfig::replica_set("rs0")).await;
    fake.push_action(
        "find",
        Action::cursor(42, "app.items", BatchKind::First, items(0..2), None, None),
    );
    fake.push_actions(
        "getMore",
        [
            Action::cursor(42, "app.items", BatchKind::Next, items(2..4), None, None),
            Action::cursor(42, "app.items", BatchKind::Next, vec![], None, None),
            Action::cursor(0, "app.items", BatchKind::Next, items(4..5), None, None),
        ],
    );
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Item>("items");
    let cursor = coll
        .find(doc! { "tag": "t" })
        .batch_size(2)
        .sort(doc! { "n": 1 })
        .projection(doc! { "_id": 0 })
        .comment("it")
        .await
        .unwrap();
    assert_eq!(cursor.id(), 42);
    let got: Vec<Item> = cursor.try_collect().await.unwrap();
    assert_eq!(got.iter().map(|i| i.n).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);

    let sent = commands(&fake);
    let names: Vec<&str> = sent.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["find", "getMore", "getMore", "getMore"]);
    let find = &sent[0].body;
    assert_eq!(find.get_str("find").ok(), Some("items"));
    assert_eq!(find.get_document("filter").ok(), Some(&doc! { "tag": "t" }));
    assert_eq!(find.get_document("sort").ok(), Some(&doc! { "n": 1 }));
    assert_eq!(find.get_str("comment").ok(), Some("it"));
    let lsid = find.get_document("lsid").unwrap();
    for gm in &sent[1..] {
        assert_eq!(gm.body.get_i64("getMore").ok(), Some(42));
        assert_eq!(gm.body.get_str("collection").ok(), Some("items"));
        assert_eq!(gm.body.get_i32("batchSize").ok(), Some(2));
        assert_eq!(gm.body.get_str("comment").ok(), Some("it"));
        assert_eq!(gm.body.get_document("lsid").unwrap(), lsid);
        assert_eq!(gm.db, "app");
    }
    // The exhausted cursor released its session: the next command reuses it.
    client
        .database("app")
        .run_command(doc! { "ping": 1 })
        .await
        .unwrap();
    let last = commands(&fake).pop().unwrap();
    assert_eq!(last.body.get_document("lsid").unwrap(), lsid);
}

#[tokio::test]
async fn close_kills_the_cursor_and_drop_does_too() {
    let fake = server(ServerConfig::replica_set("rs0")).await;
    fake.push_actions(
        "aggregate",
        [
            Action::cursor(77, "app.items", BatchKind::First, items(0..2), None, None),
            Action::cursor(78, "app.items", BatchKind::First, items(0..2), None, None),
        ],
    );
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Document>("items");
    let mut cursor = coll
        .aggregate(vec![doc! { "$match": {} }])
        .batch_size(2)
        .await
        .unwrap();
    let first = cursor.try_next().await.unwrap().unwrap();
    assert_eq!(first.get_i32("n").ok(), Some(0));
    cursor.close().await.unwrap();
    let sent = commands(&fake);
    let agg = &sent[0].body;
    assert_eq!(agg.get_str("aggregate").ok(), Some("items"));
    assert_eq!(
        agg.get_document("cursor").ok(),
        Some(&doc! { "batchSize": 2 })
    );
    let kill = sent.last().unwrap();
    assert_eq!(kill.name, "killCursors");
    assert_eq!(kill.body.get_str("killCursors").ok(), Some("items"));
    assert_eq!(
        kill.body.get_array("cursors").ok(),
        Some(&vec![Bson::Int64(77)])
    );
    assert_eq!(
        kill.body.get_document("lsid").unwrap(),
        agg.get_document("lsid").unwrap()
    );

    let cursor = coll.aggregate(vec![]).await.unwrap();
    drop(cursor);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let kills = fake.commands_named("killCursors");
        if kills.len() == 2 {
            assert_eq!(
                kills[1].body.get_array("cursors").ok(),
                Some(&vec![Bson::Int64(78)])
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no killCursors after drop"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn shutdown_ends_the_pooled_sessions_and_refuses_more_work() {
    let fake = server(ServerConfig::replica_set("rs0")).await;
    let client = client_for(&fake, "").await;
    let db = client.database("app");
    // Two concurrent operations need two sessions.
    let (a, b) = tokio::join!(
        db.run_command(doc! { "ping": 1 }),
        db.run_command(doc! { "ping": 1 })
    );
    a.unwrap();
    b.unwrap();
    let used: Vec<Document> = commands(&fake)
        .iter()
        .map(|c| c.body.get_document("lsid").unwrap().clone())
        .collect();
    client.shutdown().await;
    let ends = fake.commands_named("endSessions");
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0].db, "admin");
    let ids: Vec<Document> = ends[0]
        .body
        .get_array("endSessions")
        .unwrap()
        .iter()
        .filter_map(|b| b.as_document().cloned())
        .collect();
    for lsid in &used {
        assert!(ids.contains(lsid), "{lsid} not ended");
    }
    let err = db.run_command(doc! { "ping": 1 }).await.unwrap_err();
    assert!(err.is_shutdown(), "{err}");
    client.shutdown().await; // harmless
    assert_eq!(fake.commands_named("endSessions").len(), 1);
}

#[tokio::test]
async fn server_errors_are_typed() {
    let fake = server(ServerConfig::replica_set("rs0")).await;
    fake.push_action(
        "ping",
        Action::error_with_message(13, "Unauthorized", "not allowed", &["SomeLabel"]),
    );
    let client = client_for(&fake, "").await;
    let err = client
        .database("app")
        .run_command(doc! { "ping": 1 })
        .await
        .unwrap_err();
    assert!(err.is_server_error());
    assert!(!err.is_network());
    assert_eq!(err.code(), Some(13));
    assert_eq!(err.code_name(), Some("Unauthorized"));
    assert!(err.has_label("SomeLabel"));
    assert_eq!(err.labels(), ["SomeLabel".to_string()]);
    assert_eq!(err.wire_version(), Some(WIRE_VERSION_7_0));
    assert!(err.to_string().contains("not allowed"), "{err}");
}

#[tokio::test]
async fn network_errors_are_typed_and_the_connection_is_replaced() {
    let fake = server(ServerConfig::replica_set("rs0")).await;
    fake.push_action("ping", Fault::CloseWithoutReply);
    let client = client_for(&fake, "").await;
    let db = client.database("app");
    let err = db.run_command(doc! { "ping": 1 }).await.unwrap_err();
    assert!(err.is_network(), "{err:?}");
    assert!(!err.is_server_error());
    assert_eq!(err.code(), None);
    let before = fake.connections_accepted();
    db.run_command(doc! { "ping": 1 }).await.unwrap();
    // The network error cleared the pool and marked the server unknown; the monitor
    // checked it again on its own connection, and the pool opened one connection of the
    // new generation.
    assert_eq!(fake.connections_accepted(), before + 1);
    // The session that saw the network error was discarded, not reused.
    let pings = fake.commands_named("ping");
    assert_ne!(
        pings[0].body.get_document("lsid").unwrap(),
        pings[1].body.get_document("lsid").unwrap()
    );
}

#[tokio::test]
async fn getmore_errors_end_the_stream() {
    let fake = server(ServerConfig::replica_set("rs0")).await;
    fake.push_action(
        "find",
        Action::cursor(5, "app.items", BatchKind::First, vec![], None, None),
    );
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Document>("items");
    let mut cursor = coll.find(doc! {}).await.unwrap();
    // The default getMore answers 43 CursorNotFound.
    let err = cursor.try_next().await.unwrap_err();
    assert_eq!(err.code(), Some(43));
    assert!(cursor.try_next().await.unwrap().is_none());
    assert_eq!(cursor.id(), 0);
    cursor.close().await.unwrap();
    assert!(fake.commands_named("killCursors").is_empty());
}

#[tokio::test]
async fn the_pool_bounds_connections_in_use() {
    let fake = server(ServerConfig::replica_set("rs0")).await;
    fake.push_action(
        "ping",
        Action::delay(Duration::from_millis(600), Action::ok()),
    );
    let client = client_for(&fake, "&maxPoolSize=1&waitQueueTimeoutMS=100").await;
    let db = client.database("app");
    let slow = db.run_command(doc! { "ping": 1 });
    let fast = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        db.run_command(doc! { "hello": 1 }).await
    };
    let (slow, fast) = tokio::join!(slow, fast);
    slow.unwrap();
    let err = fast.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    // With the slot free again the next operation reuses the one pooled connection
    // (the other connection accepted was the discovery handshake's, closed after it).
    db.run_command(doc! { "ping": 1 }).await.unwrap();
    assert_eq!(fake.connections_accepted(), 2);
}

#[tokio::test]
async fn discovery_follows_a_secondary_to_the_primary() {
    let primary = server(ServerConfig::replica_set("rs0")).await;
    // The secondary's host list names the primary (the fake adds no `primary` field).
    let mut config = ServerConfig::default().with_topology(Topology::ReplicaSetSecondary {
        set_name: "rs0".into(),
    });
    config.hello.hosts = vec![primary.host_port()];
    let secondary2 = server(config).await;
    let uri = format!(
        "mongodb://{}/?replicaSet=rs0&serverSelectionTimeoutMS=3000",
        secondary2.host_port()
    );
    let client = Client::connect(&uri).await.unwrap();
    assert_eq!(
        client.server_address().unwrap().to_string(),
        primary.host_port()
    );
    client
        .database("a")
        .run_command(doc! { "ping": 1 })
        .await
        .unwrap();
    assert_eq!(primary.commands_named("ping").len(), 1);

    // directConnection=true uses the secondary as it is.
    let uri = format!(
        "mongodb://{}/?directConnection=true",
        secondary2.host_port()
    );
    let client = Client::connect(&uri).await.unwrap();
    assert_eq!(client.server_kind(), ServerKind::RsSecondary);
}

#[tokio::test]
async fn discovery_gives_up_after_server_selection_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let started = std::time::Instant::now();
    let err = Client::connect(&format!(
        "mongodb://{addr}/?serverSelectionTimeoutMS=700&connectTimeoutMS=200"
    ))
    .await
    .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[tokio::test]
async fn connect_refuses_what_brook_cannot_honour() {
    for (uri, unsupported) in [
        ("mongodb://u@127.0.0.1:9/?authMechanism=GSSAPI", "GSSAPI"),
        ("mongodb://%2Ftmp%2Fmongodb-27017.sock/", "Unix"),
        (
            "mongodb://127.0.0.1:9/?readConcernLevel=majority",
            "readConcernLevel",
        ),
    ] {
        let err = Client::connect(uri).await.unwrap_err();
        assert!(err.is_unsupported(), "{uri}: {err}");
        assert!(err.to_string().contains(unsupported), "{uri}: {err}");
    }
    for uri in [
        "mongodb://127.0.0.1:9/?foo=bar",
        "mongodb://127.0.0.1:9/?maxPoolSize=lots",
        "mongodb://127.0.0.1:9/?tls=true&ssl=false",
        "http://127.0.0.1",
    ] {
        let err = Client::connect(uri).await.unwrap_err();
        assert!(err.is_invalid_argument(), "{uri}: {err}");
    }
    let opts = ClientOptions::parse("mongodb://127.0.0.1:9/?foo=bar").unwrap();
    assert_eq!(opts.warnings.len(), 1);
}

#[tokio::test]
async fn write_concern_options_are_sent_on_writes() {
    let fake = server(ServerConfig::replica_set("rs0")).await;
    let client = client_for(&fake, "&w=majority&wTimeoutMS=250&journal=true").await;
    let coll = client.database("app").collection::<Document>("c");
    coll.insert_one(doc! { "a": 1 }).await.unwrap();
    coll.insert_many([doc! { "a": 2 }]).await.unwrap();
    coll.update_one(doc! {}, doc! { "$set": { "a": 3 } })
        .await
        .unwrap();
    coll.delete_one(doc! {}).await.unwrap();
    let sent = commands(&fake);
    assert_eq!(sent.len(), 4);
    for c in &sent {
        assert_eq!(
            c.body.get_document("writeConcern").ok(),
            Some(&doc! { "w": "majority", "wtimeout": 250i64, "j": true }),
            "{}",
            c.name
        );
    }
}

#[tokio::test]
async fn handles_and_futures_are_send() {
    fn send<T: Send + Sync>(_: &T) {}
    fn send_fut<F: std::future::Future + Send>(f: F) -> F {
        f
    }
    let fake = server(ServerConfig::replica_set("rs0")).await;
    let client = client_for(&fake, "").await;
    send(&client);
    let coll = client.database("app").collection::<Item>("items");
    // Operations can run on spawned tasks, and a cursor can move between tasks.
    let task = tokio::spawn(async move {
        let cursor = send_fut(coll.find(doc! {}).into_future()).await?;
        let items: Vec<Item> = cursor.try_collect().await?;
        coll.insert_one(Item {
            n: 1,
            tag: "t".into(),
        })
        .await?;
        Ok::<_, brook::Error>(items.len())
    });
    assert_eq!(task.await.unwrap().unwrap(), 0);
}
