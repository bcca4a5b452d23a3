//! `loadBalanced=true` on the testkit's load balancer (a fake mongos that answers a hello
//! with `loadBalanced: true` with a `serviceId`, one service per connection in turn):
//! no monitoring, cursors and change streams pinned to their connection, pool clears
//! scoped to one service, and the handshake refused without a `serviceId`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use brook::monitoring::{CmapEvent, EventHandler, PoolEvent};
use brook::{Client, ClientOptions, ReadPreference, ReadPreferenceMode};
use brook_testkit::shapes::{self, BatchKind};
use brook_testkit::{Action, FakeServer, Fault, ReceivedCommand, ServerConfig};
use bson::{Document, doc};
use futures_util::StreamExt;

async fn load_balancer(services: usize) -> FakeServer {
    let mut config = ServerConfig::load_balancer(services);
    config.max_await = Duration::from_millis(50);
    FakeServer::start(config)
        .await
        .expect("the load balancer starts")
}

fn uri(lb: &FakeServer, query: &str) -> String {
    format!(
        "mongodb://{}/?loadBalanced=true&serverSelectionTimeoutMS=5000{query}",
        lb.host_port()
    )
}

/// A client recording its pool events.
async fn recorded(lb: &FakeServer, query: &str) -> (Client, Arc<Mutex<Vec<PoolEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let mut options = ClientOptions::parse(&uri(lb, query)).expect("parses");
    options.cmap_event_handler = Some(EventHandler::new(move |e: &CmapEvent| {
        sink.lock().unwrap().push(e.event.clone());
    }));
    let client = Client::with_options(options).await.expect("connects");
    (client, events)
}

fn hellos(server: &FakeServer) -> Vec<ReceivedCommand> {
    server
        .commands()
        .into_iter()
        .filter(|c| matches!(c.name.as_str(), "hello" | "isMaster" | "ismaster"))
        .collect()
}

fn docs(range: std::ops::Range<i32>) -> Vec<Document> {
    range.map(|n| doc! { "_id": n }).collect()
}

#[tokio::test]
async fn cursors_are_pinned_and_nothing_monitors_the_load_balancer() {
    let lb = load_balancer(2).await;
    let client = Client::connect(&uri(&lb, "&heartbeatFrequencyMS=500"))
        .await
        .expect("connects");
    let coll = client.database("app").collection::<Document>("items");
    lb.push_actions(
        "find",
        [Action::reply(shapes::cursor_reply(
            77,
            "app.items",
            BatchKind::First,
            docs(0..2),
            None,
            None,
        ))],
    );
    lb.push_actions(
        "getMore",
        [
            Action::reply(shapes::cursor_reply(
                77,
                "app.items",
                BatchKind::Next,
                docs(2..4),
                None,
                None,
            )),
            Action::reply(shapes::cursor_reply(
                0,
                "app.items",
                BatchKind::Next,
                docs(4..5),
                None,
                None,
            )),
        ],
    );
    // Other operations run while the cursor fetches its batches: without pinning, a
    // getMore would take whichever connection is free.
    let mut cursor = coll.find(doc! {}).batch_size(2).await.expect("find");
    let mut seen = Vec::new();
    let db = client.database("app");
    loop {
        lb.push_actions(
            "ping",
            [Action::delay(Duration::from_millis(100), Action::ok())],
        );
        let ping = db.run_command(doc! { "ping": 1 });
        let next = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            cursor.next().await
        };
        let (ping, next) = tokio::join!(ping, next);
        ping.expect("ping");
        match next {
            Some(d) => seen.push(d.expect("a document").get_i32("_id").expect("_id")),
            None => break,
        }
    }
    let find = lb.commands_named("find");
    let get_mores = lb.commands_named("getMore");
    assert_eq!(get_mores.len(), 2);
    for g in &get_mores {
        assert_eq!(
            g.connection_id, find[0].connection_id,
            "getMores on the find's connection"
        );
    }
    // The server behind it supports sessions: operations carry an lsid.
    assert!(lb.commands_named("ping")[0].body.contains_key("lsid"));
    // Mode primary is not sent to a load balancer.
    assert!(find[0].body.get("$readPreference").is_none());

    // An early close kills the cursor on its pinned connection.
    let hellos_before = hellos(&lb);
    lb.clear_commands();
    lb.push_actions(
        "find",
        [Action::reply(shapes::cursor_reply(
            88,
            "app.items",
            BatchKind::First,
            docs(0..1),
            None,
            None,
        ))],
    );
    let preference = ReadPreference::new(ReadPreferenceMode::SecondaryPreferred);
    let cursor = coll
        .find(doc! {})
        .read_preference(preference)
        .await
        .expect("find");
    let find = lb.commands_named("find");
    assert_eq!(
        find[0].body.get_document("$readPreference").expect("sent"),
        &doc! { "mode": "secondaryPreferred" }
    );
    cursor.close().await.expect("killed");
    let kills = lb.commands_named("killCursors");
    assert_eq!(kills.len(), 1);
    assert_eq!(kills[0].connection_id, find[0].connection_id);

    // No monitor: every hello is a connection's handshake, each with loadBalanced.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut all = hellos_before;
    all.extend(hellos(&lb));
    assert!(!all.is_empty());
    assert_eq!(all.len() as u64, lb.connections_accepted(), "{all:?}");
    assert!(
        all.iter()
            .all(|h| h.body.get_bool("loadBalanced").ok() == Some(true))
    );
}

#[tokio::test]
async fn the_handshake_must_name_a_service() {
    // A mongos that is not behind a load balancer: no serviceId in its hello.
    let plain = FakeServer::start(
        ServerConfig::default().with_topology(brook_testkit::shapes::Topology::Mongos),
    )
    .await
    .expect("starts");
    let err = Client::connect(&format!(
        "mongodb://{}/?loadBalanced=true&serverSelectionTimeoutMS=1000",
        plain.host_port()
    ))
    .await
    .expect_err("refused");
    assert!(err.to_string().contains("serviceId"), "{err}");
}

#[tokio::test]
async fn a_network_error_clears_only_its_service() {
    let lb = load_balancer(2).await;
    let (client, events) = recorded(&lb, "").await;
    let db = client.database("app");
    // Two connections at once: one per service (1: the handshake connection learning the
    // deployment, kept in the pool; 2: the other service).
    lb.push_actions(
        "ping",
        [
            Action::delay(Duration::from_millis(200), Action::ok()),
            Action::delay(Duration::from_millis(200), Action::ok()),
        ],
    );
    let (a, b) = tokio::join!(
        db.run_command(doc! { "ping": 1 }),
        db.run_command(doc! { "ping": 1 })
    );
    a.expect("ping");
    b.expect("ping");
    assert_eq!(lb.connections_accepted(), 2);
    // The next command takes the most recently returned connection; it fails.
    lb.push_actions("ping", [Action::fault(Fault::CloseWithoutReply)]);
    let err = db
        .run_command(doc! { "ping": 1 })
        .await
        .expect_err("network error");
    assert!(err.is_network(), "{err}");
    let cleared: Vec<PoolEvent> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, PoolEvent::PoolCleared { .. }))
        .cloned()
        .collect();
    assert_eq!(cleared.len(), 1, "{cleared:?}");
    assert!(
        matches!(
            cleared[0],
            PoolEvent::PoolCleared {
                service_id: Some(_),
                ..
            }
        ),
        "{cleared:?}"
    );
    // The other service's connection is still there, and the server was never made
    // Unknown: the next command runs at once on it.
    db.run_command(doc! { "ping": 1 })
        .await
        .expect("the other service");
    assert_eq!(lb.connections_accepted(), 2, "no new connection was needed");
}

#[tokio::test]
async fn a_change_stream_through_a_load_balancer_resumes_on_a_new_connection() {
    let lb = load_balancer(2).await;
    let client = Client::connect(&uri(&lb, "")).await.expect("connects");
    let coll = client.database("app").collection::<Document>("items");
    let mut stream = coll
        .watch()
        .max_await_time(Duration::from_millis(20))
        .await
        .expect("opens");
    assert!(stream.next_if_any().await.expect("getMore").is_none());
    lb.push_actions("getMore", [Action::fault(Fault::CloseWithoutReply)]);
    for _ in 0..3 {
        stream.next_if_any().await.expect("resumed, no error");
    }
    assert_eq!(stream.resume_count(), 1);
    let aggregates = lb.commands_named("aggregate");
    let get_mores = lb.commands_named("getMore");
    assert_eq!(aggregates.len(), 2);
    // Each getMore went on the connection of the aggregate that opened its cursor.
    let (first, second) = (aggregates[0].connection_id, aggregates[1].connection_id);
    assert_ne!(first, second, "the resume opened a new connection");
    for g in &get_mores {
        assert!(
            g.connection_id == first || g.connection_id == second,
            "{g:?}"
        );
    }
    assert!(
        get_mores
            .iter()
            .skip_while(|g| g.connection_id == first)
            .all(|g| g.connection_id == second)
    );
    stream.close().await.expect("closed");
}
