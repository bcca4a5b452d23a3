//! The fault-injecting proxy in front of the fake server, driven by brook-conn's
//! `Connection` (and by hand-made frames where exact byte counts matter).

use std::time::{Duration, Instant};

use brook_command::{Ping, RunCommand};
use brook_conn::{ConnError, Connection, ConnectionOptions, ServerAddress};
use brook_testkit::{
    Action, CutEvent, CutPoint, CutReason, CutStyle, FakeServer, Proxy, ProxyConfig,
    ReceivedCommand, ServerConfig,
};
use brook_wire::Compressor;
use bson::doc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{options, start, within};

async fn proxy_to(server: &FakeServer, config: ProxyConfig) -> Proxy {
    Proxy::start(server.addr(), config)
        .await
        .expect("bind 127.0.0.1:0")
}

fn via(proxy: &Proxy) -> ServerAddress {
    ServerAddress::new("127.0.0.1", proxy.port())
}

async fn connect_via(proxy: &Proxy) -> Connection {
    Connection::connect(&via(proxy), &options(Some(Duration::from_secs(3))))
        .await
        .expect("handshake through the proxy")
}

/// A severed connection: a network error, and the connection is broken.
fn assert_severed(err: &ConnError, conn: &Connection) {
    assert!(err.is_network(), "expected a network error, got {err:?}");
    assert!(
        matches!(err, ConnError::Closed { .. } | ConnError::Io { .. }),
        "expected Closed or Io, got {err:?}"
    );
    assert!(conn.is_broken(), "the connection must be marked broken");
}

/// Ping until the first failure (at most `max` pings); how many succeeded.
async fn pings_until_failure(conn: &mut Connection, max: u64) -> u64 {
    for done in 0..max {
        if conn.run("admin", &Ping).await.is_err() {
            assert!(conn.is_broken());
            return done;
        }
    }
    max
}

/// Wait until `check` holds (the proxy's connection tasks finish asynchronously).
async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}

fn change_stream_aggregate() -> RunCommand {
    RunCommand::new(doc! {
        "aggregate": "orders",
        "pipeline": [{ "$changeStream": {} }],
        "cursor": {},
    })
}

fn get_more(id: i64) -> RunCommand {
    RunCommand::new(doc! { "getMore": id, "collection": "orders", "maxTimeMS": 10i64 })
}

async fn open_change_stream(conn: &mut Connection) -> i64 {
    let reply = conn
        .run("shop", &change_stream_aggregate())
        .await
        .expect("aggregate")
        .to_document()
        .expect("reply document");
    reply
        .get_document("cursor")
        .and_then(|c| c.get_i64("id"))
        .expect("cursor id")
}

/// A hand-made OP_MSG `{ ping: 1, $db: "admin" }` with request id `id`.
fn ping_frame(id: i32) -> Vec<u8> {
    let body = doc! { "ping": 1, "$db": "admin" }.to_vec().unwrap();
    let mut frame = Vec::new();
    frame.extend_from_slice(&(21 + body.len() as i32).to_le_bytes());
    frame.extend_from_slice(&id.to_le_bytes());
    frame.extend_from_slice(&0i32.to_le_bytes());
    frame.extend_from_slice(&2013i32.to_le_bytes());
    frame.extend_from_slice(&0u32.to_le_bytes());
    frame.push(0);
    frame.extend_from_slice(&body);
    frame
}

/// Read one whole frame; its bytes.
async fn read_frame(stream: &mut TcpStream) -> Vec<u8> {
    let mut header = [0u8; 16];
    stream.read_exact(&mut header).await.unwrap();
    let len = brook_wire::peek_header(&header).unwrap().message_length as usize;
    let mut frame = header.to_vec();
    frame.resize(len, 0);
    stream.read_exact(&mut frame[16..]).await.unwrap();
    frame
}

// ---------------------------------------------------------------------------------------
// Pass-through

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_through_forwards_a_handshake_and_a_hundred_pings() {
    within(async {
        let server = start(ServerConfig::default()).await;
        let proxy = proxy_to(&server, ProxyConfig::pass_through()).await;
        let mut conn = connect_via(&proxy).await;
        for _ in 0..100 {
            conn.run("admin", &Ping).await.unwrap();
        }
        assert!(!conn.is_broken());
        assert_eq!(server.commands_named("hello").len(), 1);
        assert_eq!(server.commands_named("ping").len(), 100);

        let stats = proxy.stats();
        assert_eq!(stats.connections_accepted, 1);
        assert_eq!(stats.connections_open, 1);
        assert_eq!(stats.connections_cut, 0);
        assert_eq!(stats.upstream_failures, 0);
        assert_eq!(stats.messages_to_server, 101);
        assert_eq!(stats.messages_to_client, 101);
        // Every frame is at least a header and a body.
        assert!(stats.bytes_to_server > 101 * 21, "{stats:?}");
        assert!(stats.bytes_to_client > 101 * 21, "{stats:?}");
        assert!(proxy.cuts().is_empty());
        assert_eq!(server.connections_accepted(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_split_and_coalesced_are_counted_exactly() {
    within(async {
        let server = start(ServerConfig::default()).await;
        let proxy = proxy_to(&server, ProxyConfig::pass_through()).await;
        let mut raw = TcpStream::connect(proxy.addr()).await.unwrap();
        raw.set_nodelay(true).unwrap();
        let frames: Vec<Vec<u8>> = (1..=3).map(ping_frame).collect();
        let sent: usize = frames.iter().map(Vec::len).sum();

        // The first frame in three pieces (one ends inside the header), the next two in one
        // write.
        let first = &frames[0];
        for piece in [&first[..5], &first[5..20], &first[20..]] {
            raw.write_all(piece).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut both = frames[1].clone();
        both.extend_from_slice(&frames[2]);
        raw.write_all(&both).await.unwrap();

        let mut received = 0;
        for id in 1..=3 {
            let reply = read_frame(&mut raw).await;
            assert_eq!(brook_wire::peek_header(&reply).unwrap().response_to, id);
            received += reply.len();
        }
        let stats = proxy.stats();
        assert_eq!(stats.messages_to_server, 3);
        assert_eq!(stats.messages_to_client, 3);
        assert_eq!(stats.bytes_to_server, sent as u64);
        assert_eq!(stats.bytes_to_client, received as u64);
        assert_eq!(server.commands_named("ping").len(), 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_larger_than_a_chunk_passes_whole_and_can_be_cut_inside() {
    within(async {
        let big = "x".repeat(200_000);
        let handler_big = big.clone();
        let server = start(
            ServerConfig::default().with_handler(move |cmd: &ReceivedCommand| {
                match cmd.name.as_str() {
                    "big" => Action::reply(doc! { "ok": 1.0, "data": handler_big.clone() }),
                    _ => Action::Default,
                }
            }),
        )
        .await;
        let proxy = proxy_to(&server, ProxyConfig::pass_through()).await;
        let mut conn = connect_via(&proxy).await;
        let reply = conn
            .run("admin", &RunCommand::new(doc! { "big": 1 }))
            .await
            .unwrap()
            .to_document()
            .unwrap();
        assert_eq!(reply.get_str("data").unwrap(), big);
        assert_eq!(proxy.stats().messages_to_client, 2);

        // Cut in the middle of the big reply (the second reply of the connection).
        let proxy = proxy_to(
            &server,
            ProxyConfig::default()
                .cut_after(1, 1)
                .with_cut_point(CutPoint::MidReply)
                .with_seed(5),
        )
        .await;
        let mut conn = connect_via(&proxy).await;
        let err = conn
            .run("admin", &RunCommand::new(doc! { "big": 1 }))
            .await
            .unwrap_err();
        assert_severed(&err, &conn);
        let cuts = proxy.cuts();
        assert_eq!(cuts.len(), 1);
        assert_eq!(cuts[0].reason, CutReason::Policy(CutPoint::MidReply));
        assert!(cuts[0].partial_bytes >= 1 && cuts[0].partial_bytes < 200_000);
        assert_eq!(cuts[0].last_command.as_deref(), Some("big"));
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Policy cuts

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_before_the_reply_after_n_messages() {
    within(async {
        let server = start(ServerConfig::default()).await;
        let proxy = proxy_to(&server, ProxyConfig::default().cut_after(3, 3).with_seed(1)).await;
        assert_eq!(proxy.planned_cut(1), Some(3));
        let mut conn = connect_via(&proxy).await; // the hello reply: 1
        conn.run("admin", &Ping).await.unwrap(); // 2
        conn.run("admin", &Ping).await.unwrap(); // 3
        let err = conn.run("admin", &Ping).await.unwrap_err();
        assert_severed(&err, &conn);
        assert!(
            matches!(
                err,
                ConnError::Closed {
                    mid_message: false,
                    ..
                }
            ),
            "a cut before the reply is a clean end of stream: {err:?}"
        );
        // The server did answer the third ping: the reply was dropped.
        assert_eq!(server.commands_named("ping").len(), 3);
        assert_eq!(
            proxy.cuts(),
            vec![CutEvent {
                connection_id: 1,
                reason: CutReason::Policy(CutPoint::BeforeReply),
                messages_to_client: 3,
                matching_replies: 3,
                partial_bytes: 0,
                last_command: Some("ping".to_owned()),
            }]
        );
        let stats = proxy.stats();
        assert_eq!(stats.connections_cut, 1);
        assert_eq!(stats.messages_to_client, 3);
        assert_eq!(stats.messages_to_server, 4);
        assert!(eventually(|| proxy.open_connections() == 0).await);
        assert!(eventually(|| server.open_connections() == 0).await);

        // A new connection through the proxy works, and is cut on the same schedule.
        let mut again = connect_via(&proxy).await;
        assert_eq!(pings_until_failure(&mut again, 10).await, 2);
        assert_eq!(proxy.stats().connections_cut, 2);
        assert_eq!(proxy.stats().connections_accepted, 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_after_the_reply_loses_the_next_request() {
    within(async {
        let server = start(ServerConfig::default()).await;
        let proxy = proxy_to(
            &server,
            ProxyConfig::default()
                .cut_after(2, 2)
                .with_cut_point(CutPoint::AfterReply),
        )
        .await;
        let mut conn = connect_via(&proxy).await;
        conn.run("admin", &Ping).await.unwrap();
        let err = conn.run("admin", &Ping).await.unwrap_err();
        assert_severed(&err, &conn);
        // The connection was closed before the second ping: it never reached the server.
        assert!(
            !server
                .wait_for_commands(3, Duration::from_millis(200))
                .await
        );
        assert_eq!(server.commands_named("ping").len(), 1);
        let cuts = proxy.cuts();
        assert_eq!(cuts.len(), 1);
        assert_eq!(cuts[0].reason, CutReason::Policy(CutPoint::AfterReply));
        assert_eq!(cuts[0].messages_to_client, 2);

        // N = 0 with AfterReply: closed as soon as it is accepted.
        let proxy = proxy_to(
            &server,
            ProxyConfig::default()
                .cut_after(0, 0)
                .with_cut_point(CutPoint::AfterReply),
        )
        .await;
        let refused =
            Connection::connect(&via(&proxy), &options(Some(Duration::from_secs(3)))).await;
        let err = refused.expect_err("the handshake must fail");
        assert!(err.is_network(), "{err:?}");
        assert_eq!(proxy.cuts()[0].messages_to_client, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_in_the_middle_of_a_reply() {
    within(async {
        let server = start(ServerConfig::default()).await;
        let proxy = proxy_to(
            &server,
            ProxyConfig::default()
                .cut_after(2, 2)
                .with_cut_point(CutPoint::MidReply)
                .with_seed(99),
        )
        .await;
        let mut conn = connect_via(&proxy).await;
        conn.run("admin", &Ping).await.unwrap();
        let before = proxy.stats().bytes_to_client;
        let err = conn.run("admin", &Ping).await.unwrap_err();
        assert_severed(&err, &conn);
        let truncated = match &err {
            ConnError::Closed { mid_message, .. } => *mid_message,
            ConnError::Io { source, .. } => source.kind() == std::io::ErrorKind::UnexpectedEof,
            _ => false,
        };
        assert!(truncated, "expected a truncated reply, got {err:?}");
        let cuts = proxy.cuts();
        assert_eq!(cuts.len(), 1);
        assert_eq!(cuts[0].reason, CutReason::Policy(CutPoint::MidReply));
        assert!(cuts[0].partial_bytes >= 1);
        // Exactly the partial bytes of the cut reply were forwarded.
        assert_eq!(
            proxy.stats().bytes_to_client - before,
            cuts[0].partial_bytes
        );
        assert_eq!(proxy.stats().messages_to_client, 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_style_cuts_are_network_errors() {
    within(async {
        let server = start(ServerConfig::default()).await;
        for point in [CutPoint::BeforeReply, CutPoint::MidReply] {
            let proxy = proxy_to(
                &server,
                ProxyConfig::default()
                    .cut_after(1, 1)
                    .with_cut_point(point)
                    .with_cut_style(CutStyle::Reset),
            )
            .await;
            let mut conn = connect_via(&proxy).await;
            let err = conn.run("admin", &Ping).await.unwrap_err();
            assert_severed(&err, &conn);
            if point == CutPoint::BeforeReply {
                // Nothing of the reply was sent: the client reads the reset itself.
                assert!(
                    matches!(
                        &err,
                        ConnError::Io { source, .. }
                            if source.kind() == std::io::ErrorKind::ConnectionReset
                    ),
                    "expected a connection reset, got {err:?}"
                );
            }
            assert_eq!(proxy.stats().connections_cut, 1);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_get_more_replies_are_cut() {
    within(async {
        let server = start(ServerConfig::default()).await;
        let proxy = proxy_to(
            &server,
            ProxyConfig::default()
                .cut_after(1, 1)
                .only_replies_to("getMore"),
        )
        .await;
        let mut conn = connect_via(&proxy).await;
        for _ in 0..20 {
            conn.run("admin", &Ping).await.unwrap();
        }
        let id = open_change_stream(&mut conn).await;
        conn.run("shop", &get_more(id)).await.unwrap();
        for _ in 0..20 {
            conn.run("admin", &Ping).await.unwrap();
        }
        let err = conn.run("shop", &get_more(id)).await.unwrap_err();
        assert_severed(&err, &conn);
        // The server ran the second getMore; its reply was dropped.
        assert_eq!(server.commands_named("getMore").len(), 2);
        assert_eq!(
            proxy.cuts(),
            vec![CutEvent {
                connection_id: 1,
                reason: CutReason::Policy(CutPoint::BeforeReply),
                messages_to_client: 43,
                matching_replies: 1,
                partial_bytes: 0,
                last_command: Some("getMore".to_owned()),
            }]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_requests_are_recognised() {
    within(async {
        let server = start(ServerConfig::default().with_compression(["zlib"])).await;
        let proxy = proxy_to(
            &server,
            ProxyConfig::default()
                .cut_after(1, 1)
                .only_replies_to("getMore")
                .with_cut_point(CutPoint::MidReply),
        )
        .await;
        let opts = ConnectionOptions {
            compressors: vec![Compressor::Zlib { level: None }],
            ..options(Some(Duration::from_secs(3)))
        };
        let mut conn = Connection::connect(&via(&proxy), &opts).await.unwrap();
        assert!(conn.description().compressor.is_some());
        conn.run("admin", &Ping).await.unwrap();
        let id = open_change_stream(&mut conn).await;
        conn.run("shop", &get_more(id)).await.unwrap();
        conn.run("admin", &Ping).await.unwrap();
        let err = conn.run("shop", &get_more(id)).await.unwrap_err();
        assert_severed(&err, &conn);
        assert!(
            server
                .commands_named("getMore")
                .iter()
                .all(|c| c.compressor.is_some())
        );
        let cuts = proxy.cuts();
        assert_eq!(cuts.len(), 1);
        assert_eq!(cuts[0].last_command.as_deref(), Some("getMore"));
        assert_eq!(cuts[0].matching_replies, 1);
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Manual cuts, pausing, delays

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_all_severs_every_live_connection_and_only_those() {
    within(async {
        let server = start(ServerConfig::default()).await;
        let proxy = proxy_to(&server, ProxyConfig::pass_through()).await;
        let mut a = connect_via(&proxy).await;
        let mut b = connect_via(&proxy).await;
        a.run("admin", &Ping).await.unwrap();
        b.run("admin", &Ping).await.unwrap();
        assert_eq!(proxy.cut_all(), 2);
        for conn in [&mut a, &mut b] {
            let err = conn.run("admin", &Ping).await.unwrap_err();
            assert_severed(&err, conn);
        }
        assert!(eventually(|| proxy.open_connections() == 0).await);
        let cuts = proxy.cuts();
        assert_eq!(cuts.len(), 2);
        assert!(cuts.iter().all(|c| c.reason == CutReason::Manual));
        let mut ids: Vec<u64> = cuts.iter().map(|c| c.connection_id).collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![1, 2]);
        // Pings sent after the cut were never forwarded.
        assert_eq!(server.commands_named("ping").len(), 2);

        // A later connection is unaffected.
        let mut c = connect_via(&proxy).await;
        for _ in 0..5 {
            c.run("admin", &Ping).await.unwrap();
        }
        assert_eq!(proxy.stats().connections_cut, 2);
        assert_eq!(proxy.cut_all(), 1);
        let err = c.run("admin", &Ping).await.unwrap_err();
        assert_severed(&err, &c);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_faults_resume_at_the_next_opportunity() {
    within(async {
        let server = start(ServerConfig::default()).await;
        let proxy = proxy_to(
            &server,
            ProxyConfig::default().cut_after(1, 1).with_enabled(false),
        )
        .await;
        assert!(!proxy.is_enabled());
        let mut conn = connect_via(&proxy).await;
        for _ in 0..10 {
            conn.run("admin", &Ping).await.unwrap();
        }
        proxy.set_enabled(true);
        assert!(proxy.is_enabled());
        let err = conn.run("admin", &Ping).await.unwrap_err();
        assert_severed(&err, &conn);
        assert_eq!(proxy.cuts()[0].messages_to_client, 11);

        proxy.set_enabled(false);
        let mut again = connect_via(&proxy).await;
        for _ in 0..5 {
            again.run("admin", &Ping).await.unwrap();
        }
        assert_eq!(proxy.stats().connections_cut, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delays_apply_per_message_and_pause_with_faults() {
    within(async {
        let server = start(ServerConfig::default()).await;
        let proxy = proxy_to(
            &server,
            ProxyConfig::default()
                .with_reply_delay(Duration::from_millis(100))
                .with_request_delay(Duration::from_millis(50)),
        )
        .await;
        let mut conn = connect_via(&proxy).await;
        let started = Instant::now();
        for _ in 0..2 {
            conn.run("admin", &Ping).await.unwrap();
        }
        assert!(started.elapsed() >= Duration::from_millis(300));

        proxy.set_enabled(false);
        let started = Instant::now();
        for _ in 0..2 {
            conn.run("admin", &Ping).await.unwrap();
        }
        assert!(started.elapsed() < Duration::from_millis(300));
        assert!(!conn.is_broken());
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Determinism and seeds

/// Six connections in turn, each pinging until the proxy cuts it; the pings each got and
/// the cut records.
async fn run_schedule(server: &FakeServer, seed: u64) -> (Vec<u64>, Vec<CutEvent>, Proxy) {
    let proxy = proxy_to(
        server,
        ProxyConfig::default()
            .cut_after(1, 12)
            .with_cut_point(CutPoint::Any)
            .with_seed(seed),
    )
    .await;
    let mut pings = Vec::new();
    for _ in 0..6 {
        let mut conn = connect_via(&proxy).await;
        pings.push(pings_until_failure(&mut conn, 30).await);
    }
    assert!(eventually(|| proxy.stats().connections_cut == 6).await);
    let mut cuts = proxy.cuts();
    cuts.sort_by_key(|c| c.connection_id);
    (pings, cuts, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_seed_cuts_at_the_same_points() {
    within(async {
        let server = start(ServerConfig::default()).await;
        let (pings, cuts, proxy) = run_schedule(&server, 42).await;
        assert_eq!(proxy.seed(), 42);
        // N counts the hello reply: a connection gets N - 1 pings.
        let planned: Vec<u64> = (1..=6).map(|id| proxy.planned_cut(id).unwrap()).collect();
        assert!(planned.iter().all(|n| (1..=12).contains(n)));
        let expected: Vec<u64> = planned.iter().map(|n| n - 1).collect();
        assert_eq!(pings, expected);
        for (cut, n) in cuts.iter().zip(&planned) {
            assert_eq!(cut.matching_replies, *n, "{cut:?}");
            assert!(matches!(cut.reason, CutReason::Policy(_)));
        }

        let (pings_again, cuts_again, _proxy) = run_schedule(&server, 42).await;
        assert_eq!(pings_again, pings);
        assert_eq!(cuts_again, cuts);

        // Another seed draws another schedule.
        let (other, _, other_proxy) = run_schedule(&server, 43).await;
        let other_planned: Vec<u64> = (1..=6)
            .map(|id| other_proxy.planned_cut(id).unwrap())
            .collect();
        assert_ne!(other_planned, planned);
        assert_eq!(
            other,
            other_planned.iter().map(|n| n - 1).collect::<Vec<_>>()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeds_and_plans() {
    within(async {
        let server = start(ServerConfig::default()).await;
        let plain = proxy_to(&server, ProxyConfig::pass_through()).await;
        assert_eq!(plain.planned_cut(1), None);
        let a = proxy_to(&server, ProxyConfig::default().cut_after(5, 2).with_seed(7)).await;
        let b = proxy_to(&server, ProxyConfig::default().cut_after(2, 5).with_seed(7)).await;
        for id in 1..50 {
            let n = a.planned_cut(id).unwrap();
            assert!((2..=5).contains(&n));
            assert_eq!(b.planned_cut(id), Some(n));
        }
        assert_eq!(a.seed(), 7);
        assert_eq!(a.config().cut_after, Some((5, 2)));
        assert_eq!(a.upstream(), server.addr());
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// URIs, upstream failures, shutdown

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uris_point_at_the_proxy() {
    within(async {
        let server = start(ServerConfig::default()).await;
        let proxy = proxy_to(&server, ProxyConfig::pass_through()).await;
        let hp = proxy.host_port();
        assert_eq!(hp, format!("127.0.0.1:{}", proxy.port()));
        assert_eq!(proxy.uri(), format!("mongodb://{hp}/"));
        assert_eq!(
            proxy.uri_with("directConnection=true"),
            format!("mongodb://{hp}/?directConnection=true")
        );
        assert_eq!(
            proxy.uri_with("/?a=1&b=2"),
            format!("mongodb://{hp}/?a=1&b=2")
        );
        assert_eq!(proxy.uri_with(""), proxy.uri());
        assert_eq!(
            proxy.rewrite_uri("mongodb://u:p@h1:27017,h2:27018/db?replicaSet=rs0&w=1"),
            format!("mongodb://u:p@{hp}/db?replicaSet=rs0&w=1")
        );
        assert_eq!(
            proxy.rewrite_uri("mongodb://h?directConnection=true"),
            format!("mongodb://{hp}/?directConnection=true")
        );
        assert_eq!(
            proxy.rewrite_uri("mongodb+srv://cluster.example.com"),
            format!("mongodb://{hp}/")
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_closes_the_client() {
    within(async {
        let closed = {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap()
        };
        let proxy = Proxy::start(closed, ProxyConfig::pass_through())
            .await
            .unwrap();
        let err = Connection::connect(&via(&proxy), &options(Some(Duration::from_secs(3))))
            .await
            .expect_err("nothing listens upstream");
        assert!(err.is_network(), "{err:?}");
        assert!(eventually(|| proxy.stats().upstream_failures == 1).await);
        assert_eq!(proxy.stats().connections_accepted, 1);
        assert_eq!(proxy.stats().connections_cut, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_connections_and_the_listener() {
    within(async {
        let server = start(ServerConfig::default()).await;
        let proxy = proxy_to(&server, ProxyConfig::pass_through()).await;
        let mut conn = connect_via(&proxy).await;
        conn.run("admin", &Ping).await.unwrap();
        proxy.shutdown().await;
        assert_eq!(proxy.open_connections(), 0);
        let err = conn.run("admin", &Ping).await.unwrap_err();
        assert_severed(&err, &conn);
        assert!(TcpStream::connect(proxy.addr()).await.is_err());
        // A shutdown is not a cut; a second one is harmless.
        assert_eq!(proxy.stats().connections_cut, 0);
        proxy.shutdown().await;
    })
    .await;
}
