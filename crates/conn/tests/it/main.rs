//! brook-conn against brook-testkit's fake server, through real sockets: the rules a
//! connection keeps when the peer misbehaves (streams unasked, declares huge frames, stalls,
//! never answers), and the per-call limit.
//!
//! Every test body runs under a deadline (`within`): a hang is a failure, never a stuck
//! test.

use std::future::Future;
use std::time::{Duration, Instant};

use brook_command::{CommandBody, Ping};
use brook_conn::{ConnError, Connection, ConnectionOptions, ServerAddress, next_request_id};
use brook_testkit::{Action, FakeServer, Fault, ServerConfig};
use brook_wire::{Compressor, DEFAULT_MAX_MESSAGE_SIZE, Message, MsgFlags, SharedDoc, WireError};
use bson::{Document, doc};

mod auth;

const DEADLINE: Duration = Duration::from_secs(20);

/// A read buffer this small cannot hold any of the large frames the tests declare.
const SMALL_BUFFER: usize = 512 * 1024;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Runs `f` and fails the test if it does not finish within the deadline.
async fn within<F: Future>(f: F) -> F::Output {
    match tokio::time::timeout(DEADLINE, f).await {
        Ok(out) => out,
        Err(_) => panic!("the test did not finish within {DEADLINE:?}: something hung"),
    }
}

/// Runs `f`; returns its output and how long it took.
async fn timed<F: Future>(f: F) -> (F::Output, Duration) {
    let started = Instant::now();
    let out = f.await;
    (out, started.elapsed())
}

async fn start(config: ServerConfig) -> FakeServer {
    FakeServer::start(config).await.expect("bind 127.0.0.1:0")
}

/// Options for a test connection, set one named field at a time from the defaults:
/// a short connect timeout, no socket timeout, the default frame cap, no compression.
#[derive(Debug, Clone, Copy)]
struct Opts {
    socket_timeout: Option<Duration>,
    max_message_size: usize,
    compressor: Option<Compressor>,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            socket_timeout: None,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            compressor: None,
        }
    }
}

impl Opts {
    fn socket_timeout(self, timeout: Duration) -> Opts {
        Opts {
            socket_timeout: Some(timeout),
            ..self
        }
    }

    fn max_message_size(self, cap: usize) -> Opts {
        Opts {
            max_message_size: cap,
            ..self
        }
    }

    fn compressor(self, compressor: Compressor) -> Opts {
        Opts {
            compressor: Some(compressor),
            ..self
        }
    }
}

async fn try_connect(server: &FakeServer, opts: Opts) -> Result<Connection, ConnError> {
    let options = ConnectionOptions {
        connect_timeout: Duration::from_secs(5),
        socket_timeout: opts.socket_timeout,
        max_message_size: opts.max_message_size,
        compressors: opts.compressor.into_iter().collect(),
        ..ConnectionOptions::default()
    };
    Connection::connect(&ServerAddress::new("127.0.0.1", server.port()), &options).await
}

async fn connect_with(server: &FakeServer, opts: Opts) -> Connection {
    try_connect(server, opts)
        .await
        .expect("handshake with the fake server")
}

async fn connect(server: &FakeServer) -> Connection {
    connect_with(server, Opts::default()).await
}

/// A fake server with the default configuration, and a connection to it.
async fn serve_and_connect(opts: Opts) -> (FakeServer, Connection) {
    let server = start(ServerConfig::default()).await;
    let conn = connect_with(&server, opts).await;
    (server, conn)
}

/// Scripts the server's answer to the next `ping`, runs one, and returns the error the
/// ping must end in.
async fn ping_error(
    server: &FakeServer,
    conn: &mut Connection,
    answer: impl Into<Action>,
) -> ConnError {
    server.push_action("ping", answer);
    conn.run("admin", &Ping).await.unwrap_err()
}

/// An ok reply carrying a string of `len` bytes in `pad`.
fn padded_reply(len: usize) -> Action {
    Action::reply(doc! { "ok": 1.0, "pad": "x".repeat(len) })
}

fn get_more_doc() -> Document {
    doc! { "getMore": 42_i64, "collection": "c", "$db": "db" }
}

fn get_more() -> SharedDoc {
    SharedDoc::from_document(&get_more_doc()).expect("a serialisable body")
}

fn ping_body() -> CommandBody {
    CommandBody::new(doc! { "ping": 1, "$db": "admin" })
}

/// The ways a getMore can go out; each keeps the same rules.
#[derive(Debug, Clone, Copy)]
enum Path {
    /// `run_serialized`: the cached getMore path.
    RunSerialized,
    RunBody,
    /// `send`, without EXHAUST_ALLOWED.
    Send,
}

const PATHS: [Path; 3] = [Path::RunSerialized, Path::RunBody, Path::Send];

async fn get_more_through(conn: &mut Connection, path: Path) -> Result<(), ConnError> {
    match path {
        Path::RunSerialized => conn.run_serialized(get_more()).await.map(drop),
        Path::RunBody => conn
            .run_body(CommandBody::new(get_more_doc()))
            .await
            .map(drop),
        Path::Send => conn
            .send(&Message::command(next_request_id(), get_more()))
            .await
            .map(drop),
    }
}

/// After an error: the connection is broken, and the next command fails at once with
/// `Broken` without touching the socket.
async fn assert_broken(conn: &mut Connection) {
    assert!(conn.is_broken(), "the connection must be marked broken");
    let started = Instant::now();
    let err = conn.run("admin", &Ping).await.unwrap_err();
    assert!(matches!(err, ConnError::Broken { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_millis(500));
}

fn assert_timeout(err: &ConnError, after: Duration) {
    assert!(
        err.is_timeout() && err.is_network() && !err.is_protocol(),
        "{err:?}"
    );
    assert!(
        matches!(err, ConnError::Timeout { operation: "operation", after: a, wire_version: Some(21), .. } if *a == after),
        "{err:?}"
    );
}

/// A timeout after `after`, which broke the connection.
async fn assert_timed_out_and_broken(conn: &mut Connection, err: &ConnError, after: Duration) {
    assert_timeout(err, after);
    assert_broken(conn).await;
}

// ---------------------------------------------------------------------------------------
// moreToCome only when asked

fn two_streamed_replies() -> Action {
    Action::MoreToCome(vec![
        doc! { "seq": 1, "ok": 1.0 },
        doc! { "seq": 2, "ok": 1.0 },
    ])
}

fn assert_unexpected_more_to_come(err: &ConnError) {
    assert!(
        matches!(
            err,
            ConnError::UnexpectedMoreToCome {
                wire_version: Some(21),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_protocol() && !err.is_network() && !err.is_timeout());
    assert!(err.server_error().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_reply_to_a_plain_command_is_a_protocol_error_and_breaks() {
    within(async {
        let (server, mut conn) = serve_and_connect(Opts::default()).await;
        let err = ping_error(&server, &mut conn, two_streamed_replies()).await;
        assert_unexpected_more_to_come(&err);
        assert!(
            !conn.has_more_to_come(),
            "no sequence may be under way: the connection is broken instead"
        );
        assert_broken(&mut conn).await;
        let err = conn.receive_more().await.unwrap_err();
        assert!(matches!(err, ConnError::Broken { .. }), "{err:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_reply_to_a_get_more_is_refused_on_every_path() {
    within(async {
        let server = start(ServerConfig::default()).await;
        for path in PATHS {
            let mut conn = connect(&server).await;
            server.push_action("getMore", two_streamed_replies());
            let err = get_more_through(&mut conn, path).await.unwrap_err();
            assert_unexpected_more_to_come(&err);
            assert_broken(&mut conn).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_hello_reply_fails_the_connect() {
    within(async {
        let server = start(ServerConfig::default()).await;
        server.push_action("hello", two_streamed_replies());
        let err = try_connect(&server, Opts::default()).await.unwrap_err();
        assert!(
            matches!(
                err,
                ConnError::UnexpectedMoreToCome {
                    wire_version: None,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.is_protocol());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhaust_allowed_requests_still_read_a_stream() {
    within(async {
        let opts = Opts::default().socket_timeout(Duration::from_secs(5));
        let (server, mut conn) = serve_and_connect(opts).await;
        server.push_action("getMore", two_streamed_replies());
        let mut request = Message::command(next_request_id(), get_more());
        request.flags.insert(MsgFlags::EXHAUST_ALLOWED);
        let first = conn.send(&request).await.unwrap().expect("a reply");
        assert!(first.flags.contains(MsgFlags::MORE_TO_COME));
        assert!(conn.has_more_to_come());
        let second = conn.receive_more().await.unwrap();
        assert_eq!(second.body.as_raw().get_i32("seq").unwrap(), 2);
        assert!(!conn.has_more_to_come());
        assert!(!conn.is_broken());
        conn.run("admin", &Ping).await.unwrap();
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// The client's own cap on reply frames

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_cap_holds_when_the_server_advertises_more() {
    within(async {
        let mut config = ServerConfig::default();
        config.hello.max_message_size_bytes = i32::MAX;
        let server = start(config).await;
        // The socket timeout only turns a regression (waiting for 48 MB that never
        // come) into a failure instead of a hang.
        let mut conn = connect_with(
            &server,
            Opts::default().socket_timeout(Duration::from_secs(3)),
        )
        .await;
        assert_eq!(
            conn.description().max_message_size_bytes,
            i32::MAX as usize,
            "the description keeps what the server said"
        );
        assert_eq!(conn.max_reply_size(), DEFAULT_MAX_MESSAGE_SIZE);

        let declared = DEFAULT_MAX_MESSAGE_SIZE as i32 + 1;
        let err = ping_error(&server, &mut conn, Fault::LengthOverLimit { declared }).await;
        assert!(
            matches!(
                &err,
                ConnError::Wire {
                    source: WireError::MessageTooLarge { len, max },
                    wire_version: Some(21),
                    ..
                } if *len == declared as usize && *max == DEFAULT_MAX_MESSAGE_SIZE
            ),
            "{err:?}"
        );
        assert!(err.is_protocol() && !err.is_network());
        assert!(
            conn.read_buffer_capacity() < SMALL_BUFFER,
            "nothing was set aside for the refused frame: {}",
            conn.read_buffer_capacity()
        );
        assert_broken(&mut conn).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smaller_client_cap_refuses_a_real_reply_over_it() {
    within(async {
        let cap = 64 * 1024;
        let (server, mut conn) = serve_and_connect(Opts::default().max_message_size(cap)).await;
        assert_eq!(conn.max_reply_size(), cap);
        // Under the cap: fine.
        server.push_action("ping", padded_reply(cap / 2));
        conn.run("admin", &Ping).await.unwrap();
        // Over it: refused, although the server's own limit is 48 MB.
        let err = ping_error(&server, &mut conn, padded_reply(cap)).await;
        assert!(
            matches!(
                &err,
                ConnError::Wire { source: WireError::MessageTooLarge { max, .. }, .. } if *max == cap
            ),
            "{err:?}"
        );
        assert_broken(&mut conn).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_reply_is_held_to_the_cap_once_uncompressed() {
    within(async {
        let server = start(ServerConfig::default().with_compression(["zlib"])).await;
        let cap = 64 * 1024;
        let opts = Opts::default()
            .compressor(Compressor::Zlib { level: None })
            .max_message_size(cap);
        let mut conn = connect_with(&server, opts).await;
        assert!(conn.description().compressor.is_some());
        // A reply that compresses to almost nothing but is twice the cap once inflated.
        let err = ping_error(&server, &mut conn, padded_reply(2 * cap)).await;
        assert!(
            matches!(
                &err,
                ConnError::Wire { source: WireError::UncompressedSizeTooLarge { max, .. }, .. } if *max == cap
            ),
            "{err:?}"
        );
        assert!(err.is_protocol());
        assert_broken(&mut conn).await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// The read buffer grows with the bytes that arrive

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_large_frame_costs_nothing_until_its_bytes_arrive() {
    within(async {
        let (server, mut conn) = serve_and_connect(Opts::default().socket_timeout(ms(300))).await;
        // 40 MB declared (under the 48 MB limit), ~100 bytes sent, then silence.
        let declared = 40_000_000;
        let err = ping_error(&server, &mut conn, Fault::LengthOverLimit { declared }).await;
        assert_timeout(&err, ms(300));
        assert!(
            conn.read_buffer_capacity() < SMALL_BUFFER,
            "the read buffer grew to {} bytes for a frame that never came",
            conn.read_buffer_capacity()
        );
        assert_broken(&mut conn).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_replies_arrive_whole() {
    within(async {
        let (server, mut conn) = serve_and_connect(Opts::default()).await;
        for size in [100_000, 3_000_000, 16_000, 9_000_000, 10] {
            server.push_action("ping", padded_reply(size));
            let reply = conn.run_body(ping_body()).await.unwrap();
            assert_eq!(reply.body.as_raw().get_str("pad").unwrap().len(), size);
        }
        assert!(!conn.is_broken());
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// The per-call limit

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serialized_within_bounds_a_hung_exchange() {
    within(async {
        // No socket timeout at all: only the call's own limit ends the wait.
        let (server, mut conn) = serve_and_connect(Opts::default()).await;
        server.push_action("getMore", Fault::Hang);
        let limit = ms(200);
        let (result, took) = timed(conn.run_serialized_within(get_more(), Some(limit))).await;
        assert!(took >= limit && took < Duration::from_secs(3), "{took:?}");
        assert_timed_out_and_broken(&mut conn, &result.unwrap_err(), limit).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_body_within_bounds_a_hung_exchange() {
    within(async {
        let (server, mut conn) = serve_and_connect(Opts::default()).await;
        server.push_action("ping", Fault::Hang);
        let limit = ms(150);
        let (result, took) = timed(conn.run_body_within(ping_body(), Some(limit))).await;
        assert!(took < Duration::from_secs(3), "{took:?}");
        assert_timed_out_and_broken(&mut conn, &result.unwrap_err(), limit).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_limit_replaces_the_socket_timeout() {
    within(async {
        let socket_timeout = ms(100);
        let (server, mut conn) =
            serve_and_connect(Opts::default().socket_timeout(socket_timeout)).await;
        let slow = || Action::delay(ms(400), Action::ok());

        // Longer than the socket timeout: the slow reply is waited for.
        server.push_action("getMore", slow());
        let reply = conn
            .run_serialized_within(get_more(), Some(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(reply.body.as_raw().get_f64("ok").unwrap(), 1.0);
        server.push_action("ping", slow());
        conn.run_body_within(ping_body(), Some(Duration::from_secs(5)))
            .await
            .unwrap();
        assert!(!conn.is_broken());

        // None: the socket timeout applies as before.
        server.push_action("getMore", slow());
        let err = conn
            .run_serialized_within(get_more(), None)
            .await
            .unwrap_err();
        assert_timed_out_and_broken(&mut conn, &err, socket_timeout).await;

        // Shorter than the socket timeout: the call's limit wins.
        let opts = Opts::default().socket_timeout(Duration::from_secs(10));
        let mut conn = connect_with(&server, opts).await;
        server.push_action("getMore", slow());
        let limit = ms(100);
        let (result, took) = timed(conn.run_serialized_within(get_more(), Some(limit))).await;
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert_timed_out_and_broken(&mut conn, &result.unwrap_err(), limit).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_limit_fails_at_once_and_sends_nothing() {
    within(async {
        let (server, mut conn) = serve_and_connect(Opts::default()).await;
        let err = conn
            .run_serialized_within(get_more(), Some(Duration::ZERO))
            .await
            .unwrap_err();
        assert_timeout(&err, Duration::ZERO);
        let err = conn
            .run_body_within(ping_body(), Some(Duration::ZERO))
            .await
            .unwrap_err();
        assert_timeout(&err, Duration::ZERO);
        assert!(!conn.is_broken(), "nothing was sent");
        conn.run("admin", &Ping).await.unwrap();
        let names: Vec<String> = server.commands().into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["hello", "ping"]);
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// socketTimeoutMS bounds every exchange after the handshake

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_never_answered_times_out_within_the_socket_timeout() {
    within(async {
        let server = start(ServerConfig::default()).await;
        let socket_timeout = ms(250);
        for path in PATHS {
            let mut conn =
                connect_with(&server, Opts::default().socket_timeout(socket_timeout)).await;
            server.push_action("getMore", Fault::Hang);
            let (result, took) = timed(get_more_through(&mut conn, path)).await;
            assert!(
                took >= socket_timeout && took < Duration::from_secs(3),
                "{path:?}: {took:?}"
            );
            assert_timed_out_and_broken(&mut conn, &result.unwrap_err(), socket_timeout).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_frame_then_silence_times_out() {
    within(async {
        let server = start(ServerConfig::default()).await;
        let socket_timeout = ms(250);
        for bytes in [3, 16, 30] {
            let mut conn =
                connect_with(&server, Opts::default().socket_timeout(socket_timeout)).await;
            let stall = Duration::from_secs(30);
            let fault = Fault::PartialThenStall { bytes, stall };
            let (err, took) = timed(ping_error(&server, &mut conn, fault)).await;
            assert!(took < Duration::from_secs(3), "{bytes} bytes: {took:?}");
            assert_timed_out_and_broken(&mut conn, &err, socket_timeout).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_decode_fault_is_a_protocol_error() {
    within(async {
        let faults = [
            Fault::LengthOverLimit { declared: i32::MAX },
            Fault::LengthBelowMinimum { declared: 8 },
            Fault::LengthBelowMinimum { declared: -1 },
            Fault::BadBson,
            Fault::UnknownSectionKind(7),
            Fault::BadChecksum,
            Fault::UnknownRequiredFlag(1 << 3),
            Fault::WrongResponseTo,
        ];
        let server = start(ServerConfig::default()).await;
        for fault in faults {
            let mut conn = connect(&server).await;
            let err = ping_error(&server, &mut conn, fault.clone()).await;
            assert!(
                err.is_protocol() && !err.is_network() && !err.is_timeout(),
                "{fault:?}: {err:?}"
            );
            assert!(
                matches!(
                    err,
                    ConnError::Wire { .. } | ConnError::ResponseToMismatch { .. }
                ),
                "{fault:?}: {err:?}"
            );
            assert_broken(&mut conn).await;
        }
        // Network faults are not protocol errors.
        for fault in [Fault::CloseWithoutReply, Fault::CloseMidReply] {
            let mut conn = connect(&server).await;
            let err = ping_error(&server, &mut conn, fault.clone()).await;
            assert!(err.is_network() && !err.is_protocol(), "{fault:?}: {err:?}");
            assert_broken(&mut conn).await;
        }
        // Nor are server errors.
        let mut conn = connect(&server).await;
        let refusal = Action::error(11600, "InterruptedAtShutdown", &[]);
        let err = ping_error(&server, &mut conn, refusal).await;
        assert!(!err.is_protocol() && !err.is_network(), "{err:?}");
        assert!(!conn.is_broken());
    })
    .await;
}
