//! Connection tests against a tiny in-test server that speaks OP_MSG with brook-wire.

use std::future::Future;
use std::time::Duration;

use brook_command::{CommandBody, CommandError, Ping, RunCommand};
use brook_wire::{DecodeLimits, Decoded, EncodeOptions, Message, MsgFlags, SharedDoc, WireError};
use bson::{Document, doc};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::{ConnError, Connection, ConnectionOptions, ServerAddress, next_request_id};
#[cfg(all(feature = "snappy", feature = "zlib", feature = "zstd"))]
use {crate::ServerKind, brook_wire::Compressor};

/// The server side of one connection.
pub(crate) struct Peer<S> {
    stream: S,
    buf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Peer<S> {
    pub(crate) fn new(stream: S) -> Self {
        Peer {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// The next frame, or `None` when the client closed the connection.
    pub(crate) async fn recv(&mut self) -> Option<Decoded> {
        loop {
            if let Some(d) = brook_wire::decode(&mut self.buf, &DecodeLimits::default()).unwrap() {
                return Some(d);
            }
            self.buf.reserve(4096);
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The encoded bytes of a reply.
    pub(crate) fn frame(response_to: i32, flags: MsgFlags, body: &Document) -> (i32, BytesMut) {
        let request_id = next_request_id();
        let mut msg = Message::command(request_id, SharedDoc::from_document(body).unwrap());
        msg.response_to = response_to;
        msg.flags = flags;
        let mut out = BytesMut::new();
        msg.encode(&mut out, &EncodeOptions::default()).unwrap();
        (request_id, out)
    }

    /// Writes `bytes` as they are, framed or not.
    pub(crate) async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// Sends a reply; returns its request id.
    pub(crate) async fn reply_with(
        &mut self,
        response_to: i32,
        flags: MsgFlags,
        body: &Document,
    ) -> i32 {
        let (id, bytes) = Self::frame(response_to, flags, body);
        self.send_raw(&bytes).await;
        id
    }

    pub(crate) async fn reply(&mut self, to: &Decoded, body: &Document) -> i32 {
        self.reply_with(to.message.request_id, MsgFlags::empty(), body)
            .await
    }

    /// Reads the hello and answers it with `reply`; returns the hello's body.
    pub(crate) async fn handshake_with(&mut self, reply: &Document) -> Document {
        let hello = self.recv().await.expect("a hello");
        let body = hello.message.body.to_document().unwrap();
        self.reply(&hello, reply).await;
        body
    }

    pub(crate) async fn handshake(&mut self) -> Document {
        self.handshake_with(&hello_reply()).await
    }
}

pub(crate) fn hello_reply() -> Document {
    doc! {
        "isWritablePrimary": true,
        "minWireVersion": 0,
        "maxWireVersion": 21,
        "maxMessageSizeBytes": 48_000_000,
        "ok": 1.0,
    }
}

/// Starts a one-connection server running `script`; returns its address and task.
async fn serve<F, Fut>(script: F) -> (ServerAddress, JoinHandle<()>)
where
    F: FnOnce(Peer<tokio::net::TcpStream>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        script(Peer::new(stream)).await;
    });
    (ServerAddress::new("127.0.0.1", port), task)
}

async fn connect(address: &ServerAddress) -> Connection {
    Connection::connect(address, &ConnectionOptions::default())
        .await
        .unwrap()
}

/// Connects with `socket_timeout` bounding every exchange after the handshake.
async fn connect_with_socket_timeout(
    address: &ServerAddress,
    socket_timeout: Duration,
) -> Connection {
    let options = ConnectionOptions {
        socket_timeout: Some(socket_timeout),
        ..ConnectionOptions::default()
    };
    Connection::connect(address, &options).await.unwrap()
}

/// The peer closed the socket part way through a reply.
fn assert_closed_mid_message(err: &ConnError) {
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
}

#[cfg(all(feature = "snappy", feature = "zlib", feature = "zstd"))]
#[tokio::test]
async fn handshake_sends_metadata_and_negotiates() {
    let (address, server) = serve(|mut peer| async move {
        let hello = peer
            .handshake_with(&doc! {
                "isWritablePrimary": false,
                "secondary": true,
                "setName": "rs0",
                "hosts": ["a:1", "b:2"],
                "primary": "b:2",
                "me": "a:1",
                "minWireVersion": 6,
                "maxWireVersion": 25,
                "maxBsonObjectSize": 1000,
                "maxMessageSizeBytes": 5000,
                "maxWriteBatchSize": 10,
                "logicalSessionTimeoutMinutes": 30,
                "compression": ["zlib", "snappy"],
                "ok": 1,
            })
            .await;
        assert_eq!(hello.get_i32("hello").unwrap(), 1);
        assert_eq!(hello.get_str("$db").unwrap(), "admin");
        let client = hello.get_document("client").unwrap();
        assert_eq!(
            client
                .get_document("application")
                .unwrap()
                .get_str("name")
                .unwrap(),
            "indexer"
        );
        assert_eq!(
            client
                .get_document("driver")
                .unwrap()
                .get_str("name")
                .unwrap(),
            "brook"
        );
        let offered: Vec<&str> = hello
            .get_array("compression")
            .unwrap()
            .iter()
            .filter_map(|b| b.as_str())
            .collect();
        assert_eq!(offered, ["snappy", "zlib"]);
        assert!(!hello.contains_key("loadBalanced"));
    })
    .await;
    let opts = ConnectionOptions {
        app_name: Some("indexer".into()),
        compressors: vec![Compressor::Snappy, Compressor::Zlib { level: Some(1) }],
        ..ConnectionOptions::default()
    };
    let conn = Connection::connect(&address, &opts).await.unwrap();
    server.await.unwrap();

    let d = conn.description();
    assert_eq!(d.address, address);
    assert_eq!(d.server_kind, ServerKind::RsSecondary);
    assert_eq!((d.min_wire_version, d.max_wire_version), (6, 25));
    assert_eq!(d.max_bson_object_size, 1000);
    assert_eq!(d.max_message_size_bytes, 5000);
    assert_eq!(d.max_write_batch_size, 10);
    assert_eq!(d.logical_session_timeout, Some(Duration::from_secs(1800)));
    assert_eq!(d.compressor, Some(Compressor::Snappy));
    assert_eq!(d.set_name.as_deref(), Some("rs0"));
    assert_eq!(d.hosts, ["a:1", "b:2"]);
    assert_eq!(d.primary.as_deref(), Some("b:2"));
    assert_eq!(d.me.as_deref(), Some("a:1"));
    assert!(!conn.is_broken());
    assert!(!conn.is_tls());
    assert_eq!(conn.address(), &address);
    assert_eq!(conn.socket_timeout(), None);
}

#[cfg(all(feature = "snappy", feature = "zlib", feature = "zstd"))]
#[tokio::test]
async fn run_compresses_commands_and_reuses_the_connection() {
    let (address, server) = serve(|mut peer| async move {
        let hello = peer
            .handshake_with(&doc! { "maxWireVersion": 21, "compression": ["zstd"], "ok": 1 })
            .await;
        assert!(hello.contains_key("compression"));
        for n in 0..3 {
            let ping = peer.recv().await.unwrap();
            assert_eq!(ping.compressor, Some(Compressor::Zstd { level: None }));
            assert_eq!(
                ping.message.body.to_document().unwrap(),
                doc! { "ping": 1, "$db": "admin" }
            );
            peer.reply(&ping, &doc! { "ok": 1, "n": n }).await;
        }
        // Commands the compression spec exempts go uncompressed.
        let sasl = peer.recv().await.unwrap();
        assert_eq!(sasl.compressor, None);
        assert_eq!(sasl.message.command_name(), Some("saslStart"));
        peer.reply(&sasl, &doc! { "ok": 1, "done": true }).await;
    })
    .await;
    let opts = ConnectionOptions {
        compressors: vec![Compressor::Zstd { level: None }],
        ..ConnectionOptions::default()
    };
    let mut conn = Connection::connect(&address, &opts).await.unwrap();
    for _ in 0..3 {
        conn.run("admin", &Ping).await.unwrap();
    }
    let reply = conn
        .run_body(CommandBody::new(
            doc! { "saslStart": 1, "mechanism": "PLAIN", "$db": "admin" },
        ))
        .await
        .unwrap();
    assert!(reply.body.as_raw().get_bool("done").unwrap());
    assert!(!conn.is_broken());
    server.await.unwrap();
}

#[tokio::test]
async fn server_error_is_a_command_error_and_keeps_the_connection() {
    let (address, server) = serve(|mut peer| async move {
        peer.handshake().await;
        let cmd = peer.recv().await.unwrap();
        peer.reply(
            &cmd,
            &doc! {
                "ok": 0,
                "code": 11600,
                "codeName": "InterruptedAtShutdown",
                "errmsg": "going away",
                "errorLabels": ["ResumableChangeStreamError"],
            },
        )
        .await;
        let cmd = peer.recv().await.unwrap();
        peer.reply(&cmd, &doc! { "ok": 1, "value": 7 }).await;
    })
    .await;
    let mut conn = connect(&address).await;
    let err = conn.run("admin", &Ping).await.unwrap_err();
    assert!(!err.is_network());
    assert!(!err.is_timeout());
    assert_eq!(err.wire_version(), Some(21));
    let server_error = err.server_error().expect("a server error");
    assert_eq!(server_error.code, Some(11600));
    assert_eq!(
        server_error.code_name.as_deref(),
        Some("InterruptedAtShutdown")
    );
    assert!(server_error.has_label("ResumableChangeStreamError"));
    assert!(
        matches!(&err, ConnError::Command { source, .. } if matches!(**source, CommandError::Server(_))),
        "{err:?}"
    );
    assert!(!conn.is_broken());

    // run_body hands back ok:0 replies unjudged; here the next reply is ok:1.
    let reply = conn
        .run(
            "test",
            &RunCommand {
                body: doc! { "whatever": 1 },
            },
        )
        .await
        .unwrap();
    assert_eq!(reply.as_raw().get_i32("value").unwrap(), 7);
    server.await.unwrap();
}

#[tokio::test]
async fn run_body_returns_ok_zero_replies() {
    let (address, server) = serve(|mut peer| async move {
        peer.handshake().await;
        let cmd = peer.recv().await.unwrap();
        assert_eq!(
            cmd.message.body.to_document().unwrap(),
            doc! { "count": "c", "$db": "db" }
        );
        peer.reply(
            &cmd,
            &doc! { "ok": 0, "code": 26, "errmsg": "ns not found" },
        )
        .await;
    })
    .await;
    let mut conn = connect(&address).await;
    let reply = conn
        .run_body(CommandBody::new(doc! { "count": "c", "$db": "db" }))
        .await
        .unwrap();
    assert_eq!(reply.body.as_raw().get_i32("code").unwrap(), 26);
    assert!(brook_command::check_ok(reply.body.as_raw()).is_err());
    assert!(!conn.is_broken());
    server.await.unwrap();
}

#[tokio::test]
async fn a_more_to_come_request_gets_no_reply() {
    let (address, server) = serve(|mut peer| async move {
        peer.handshake().await;
        let fire = peer.recv().await.unwrap();
        assert!(fire.message.flags.contains(MsgFlags::MORE_TO_COME));
        assert_eq!(fire.message.command_name(), Some("insert"));
        let ping = peer.recv().await.unwrap();
        assert_eq!(ping.message.command_name(), Some("ping"));
        peer.reply(&ping, &doc! { "ok": 1 }).await;
    })
    .await;
    let mut conn = connect(&address).await;
    let mut msg = Message::command(
        next_request_id(),
        SharedDoc::from_document(&doc! { "insert": "c", "$db": "d" }).unwrap(),
    );
    msg.flags.insert(MsgFlags::MORE_TO_COME);
    assert_eq!(conn.send(&msg).await.unwrap(), None);
    assert!(!conn.is_broken());
    assert!(!conn.has_more_to_come());
    conn.run("admin", &Ping).await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn more_to_come_replies_are_read_as_a_sequence() {
    let (address, server) = serve(|mut peer| async move {
        peer.handshake().await;
        let req = peer.recv().await.unwrap();
        assert!(req.message.flags.contains(MsgFlags::EXHAUST_ALLOWED));
        let mut to = req.message.request_id;
        for n in 0..3 {
            let flags = if n < 2 {
                MsgFlags::MORE_TO_COME
            } else {
                MsgFlags::empty()
            };
            to = peer.reply_with(to, flags, &doc! { "ok": 1, "n": n }).await;
        }
        let ping = peer.recv().await.unwrap();
        peer.reply(&ping, &doc! { "ok": 1 }).await;
    })
    .await;
    let mut conn = connect(&address).await;
    let mut msg = Message::command(
        next_request_id(),
        SharedDoc::from_document(&doc! { "getMore": 5_i64, "collection": "c", "$db": "d" })
            .unwrap(),
    );
    msg.flags.insert(MsgFlags::EXHAUST_ALLOWED);
    let first = conn.send(&msg).await.unwrap().unwrap();
    assert_eq!(first.body.as_raw().get_i32("n").unwrap(), 0);
    assert!(first.flags.contains(MsgFlags::MORE_TO_COME));
    assert!(conn.has_more_to_come());

    // No new request while replies are due; the connection stays as it was.
    let err = conn.run("admin", &Ping).await.unwrap_err();
    assert!(matches!(err, ConnError::InvalidState { .. }), "{err:?}");
    assert!(!conn.is_broken());

    let second = conn.receive_more().await.unwrap();
    assert_eq!(second.body.as_raw().get_i32("n").unwrap(), 1);
    assert!(conn.has_more_to_come());
    let third = conn.receive_more().await.unwrap();
    assert_eq!(third.body.as_raw().get_i32("n").unwrap(), 2);
    assert!(!conn.has_more_to_come());

    let err = conn.receive_more().await.unwrap_err();
    assert!(matches!(err, ConnError::InvalidState { .. }), "{err:?}");
    conn.run("admin", &Ping).await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn response_to_mismatch_breaks_the_connection() {
    let (address, server) = serve(|mut peer| async move {
        peer.handshake().await;
        let cmd = peer.recv().await.unwrap();
        peer.reply_with(
            cmd.message.request_id.wrapping_add(1000),
            MsgFlags::empty(),
            &doc! { "ok": 1 },
        )
        .await;
        // The broken connection must not send anything more: the next thing seen is EOF.
        assert!(peer.recv().await.is_none());
    })
    .await;
    let mut conn = connect(&address).await;
    let err = conn.run("admin", &Ping).await.unwrap_err();
    match &err {
        ConnError::ResponseToMismatch {
            expected, actual, ..
        } => assert_eq!(actual.wrapping_sub(*expected), 1000),
        other => panic!("expected ResponseToMismatch, got {other:?}"),
    }
    assert_eq!(err.wire_version(), Some(21));
    assert!(conn.is_broken());
    let again = conn.run("admin", &Ping).await.unwrap_err();
    assert!(
        matches!(again, ConnError::Broken { connection_id, .. } if connection_id == conn.id()),
        "{again:?}"
    );
    assert!(again.is_network());
    drop(conn);
    server.await.unwrap();
}

#[tokio::test]
async fn socket_timeout_breaks_the_connection() {
    let (address, server) = serve(|mut peer| async move {
        peer.handshake().await;
        let _ping = peer.recv().await.unwrap();
        // Never answer; wait for the client to give up and close.
        assert!(peer.recv().await.is_none());
    })
    .await;
    let mut conn = connect_with_socket_timeout(&address, Duration::from_millis(100)).await;
    assert_eq!(conn.socket_timeout(), Some(Duration::from_millis(100)));
    let started = std::time::Instant::now();
    let err = conn.run("admin", &Ping).await.unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert!(err.is_timeout() && err.is_network(), "{err:?}");
    assert!(matches!(
        err,
        ConnError::Timeout {
            operation: "operation",
            wire_version: Some(21),
            ..
        }
    ));
    assert!(conn.is_broken());
    drop(conn);
    server.await.unwrap();
}

#[tokio::test]
async fn socket_timeout_can_be_changed_and_zero_means_none() {
    let (address, server) = serve(|mut peer| async move {
        peer.handshake().await;
        let ping = peer.recv().await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        peer.reply(&ping, &doc! { "ok": 1 }).await;
        let _ping = peer.recv().await.unwrap();
        assert!(peer.recv().await.is_none());
    })
    .await;
    let mut conn = connect(&address).await;
    conn.set_socket_timeout(Some(Duration::ZERO));
    conn.run("admin", &Ping).await.unwrap();
    conn.set_socket_timeout(Some(Duration::from_millis(50)));
    let err = conn.run("admin", &Ping).await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(conn.is_broken());
    drop(conn);
    server.await.unwrap();
}

#[tokio::test]
async fn peer_closing_mid_reply_is_closed_not_a_hang() {
    let (address, server) = serve(|mut peer| async move {
        peer.handshake().await;
        let cmd = peer.recv().await.unwrap();
        let (_, bytes) = Peer::<tokio::net::TcpStream>::frame(
            cmd.message.request_id,
            MsgFlags::empty(),
            &doc! { "ok": 1, "pad": "x".repeat(100) },
        );
        peer.send_raw(bytes.get(..bytes.len() / 2).unwrap()).await;
        // Dropping the peer closes the socket.
    })
    .await;
    let mut conn = connect_with_socket_timeout(&address, Duration::from_secs(10)).await;
    let err = conn.run("admin", &Ping).await.unwrap_err();
    assert_closed_mid_message(&err);
    assert!(err.is_network() && !err.is_timeout());
    assert!(conn.is_broken());
    server.await.unwrap();
}

#[tokio::test]
async fn peer_closing_before_the_reply_is_closed() {
    let (address, server) = serve(|mut peer| async move {
        peer.handshake().await;
        let _cmd = peer.recv().await.unwrap();
    })
    .await;
    let mut conn = connect(&address).await;
    let err = conn.run("admin", &Ping).await.unwrap_err();
    assert!(
        matches!(
            err,
            ConnError::Closed {
                mid_message: false,
                ..
            } | ConnError::Io { .. }
        ),
        "{err:?}"
    );
    assert!(err.is_network());
    assert!(conn.is_broken());
    server.await.unwrap();
}

#[tokio::test]
async fn a_dropped_future_leaves_the_connection_broken() {
    let (address, server) = serve(|mut peer| async move {
        peer.handshake().await;
        let _ping = peer.recv().await.unwrap();
        // The client gives up; nothing else may arrive.
        assert!(peer.recv().await.is_none());
    })
    .await;
    let mut conn = connect(&address).await;
    let outcome = tokio::time::timeout(Duration::from_millis(50), conn.run("admin", &Ping)).await;
    assert!(outcome.is_err(), "the server never answers");
    assert!(conn.is_broken());
    let err = conn.run("admin", &Ping).await.unwrap_err();
    assert!(matches!(err, ConnError::Broken { .. }), "{err:?}");
    let err = conn.receive_more().await.unwrap_err();
    assert!(matches!(err, ConnError::Broken { .. }), "{err:?}");
    drop(conn);
    server.await.unwrap();
}

#[tokio::test]
async fn malformed_frame_is_a_wire_error_and_breaks() {
    let (address, server) = serve(|mut peer| async move {
        peer.handshake().await;
        let cmd = peer.recv().await.unwrap();
        // A 20-byte frame with an unknown op code.
        let mut bytes = Vec::new();
        for v in [20_i32, 99, cmd.message.request_id, 4242, 0] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        peer.send_raw(&bytes).await;
        assert!(peer.recv().await.is_none());
    })
    .await;
    let mut conn = connect(&address).await;
    let err = conn.run("admin", &Ping).await.unwrap_err();
    assert!(matches!(err, ConnError::Wire { .. }), "{err:?}");
    assert!(!err.is_network());
    assert!(err.is_protocol());
    assert!(conn.is_broken());
    drop(conn);
    server.await.unwrap();
}

#[tokio::test]
async fn the_servers_message_size_limits_both_ways() {
    let (address, server) = serve(|mut peer| async move {
        peer.handshake_with(&doc! { "maxWireVersion": 21, "maxMessageSizeBytes": 1000, "ok": 1 })
            .await;
        let cmd = peer.recv().await.unwrap();
        assert_eq!(cmd.message.command_name(), Some("ping"));
        peer.reply(&cmd, &doc! { "ok": 1, "big": "y".repeat(2000) })
            .await;
        assert!(peer.recv().await.is_none());
    })
    .await;
    let mut conn = connect(&address).await;
    assert_eq!(conn.description().max_message_size_bytes, 1000);

    // Too large to send: refused before anything is written, the connection is fine.
    let err = conn
        .run_body(CommandBody::new(
            doc! { "ping": 1, "pad": "z".repeat(2000), "$db": "admin" },
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ConnError::Encode {
                source: WireError::MessageTooLarge { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_protocol() && !err.is_network());
    assert!(!conn.is_broken());

    // A reply beyond the limit is refused and breaks the connection.
    assert_eq!(conn.max_reply_size(), 1000);
    let err = conn.run("admin", &Ping).await.unwrap_err();
    assert!(
        matches!(
            err,
            ConnError::Wire {
                source: WireError::MessageTooLarge { max: 1000, .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_protocol());
    assert!(conn.is_broken());
    drop(conn);
    server.await.unwrap();
}

#[tokio::test]
async fn refused_hello_is_a_handshake_error() {
    let (address, server) = serve(|mut peer| async move {
        peer.handshake_with(
            &doc! { "ok": 0, "code": 18, "codeName": "AuthenticationFailed", "errmsg": "no" },
        )
        .await;
    })
    .await;
    let err = Connection::connect(&address, &ConnectionOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ConnError::Handshake { .. }), "{err:?}");
    assert_eq!(err.server_error().and_then(|e| e.code), Some(18));
    assert_eq!(err.address(), Some(&address));
    server.await.unwrap();
}

#[tokio::test]
async fn an_unknown_hello_is_retried_as_is_master() {
    let (address, server) = serve(|mut peer| async move {
        let first = peer
            .handshake_with(&doc! { "ok": 0, "code": 59, "codeName": "CommandNotFound", "errmsg": "no such command: 'hello'" })
            .await;
        assert!(first.contains_key("hello"));
        let second = peer.handshake().await;
        assert_eq!(second.get_i32("isMaster").unwrap(), 1);
        assert!(second.get_bool("helloOk").unwrap());
        assert!(second.contains_key("client"));
    })
    .await;
    let conn = connect(&address).await;
    assert_eq!(conn.description().max_wire_version, 21);
    server.await.unwrap();
}

#[tokio::test]
async fn silent_server_times_out_the_handshake() {
    let (address, server) = serve(|mut peer| async move {
        let _hello = peer.recv().await.unwrap();
        assert!(peer.recv().await.is_none());
    })
    .await;
    let err = Connection::connect(
        &address,
        &ConnectionOptions {
            connect_timeout: Duration::from_millis(100),
            ..ConnectionOptions::default()
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            ConnError::Timeout {
                operation: "handshake",
                wire_version: None,
                ..
            }
        ),
        "{err:?}"
    );
    server.await.unwrap();
}

#[tokio::test]
async fn request_ids_are_unique_and_increasing() {
    let a = next_request_id();
    let b = next_request_id();
    assert_ne!(a, b);
    let handles: Vec<_> = (0..4)
        .map(|_| tokio::spawn(async { (0..100).map(|_| next_request_id()).collect::<Vec<_>>() }))
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let count = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), count);
}

#[tokio::test]
async fn close_shuts_the_stream_down() {
    let (address, server) = serve(|mut peer| async move {
        peer.handshake().await;
        assert!(peer.recv().await.is_none());
    })
    .await;
    let conn = connect(&address).await;
    conn.close().await;
    server.await.unwrap();
}

/// TLS: a tokio-rustls server with an rcgen certificate answers the handshake.
mod tls {
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use rustls::ServerConfig;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::server::WebPkiClientVerifier;
    use tokio_rustls::TlsAcceptor;

    use super::*;
    use crate::TlsOptions;

    /// A file in the temp directory, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(contents: &str) -> TempFile {
            static SEQ: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "brook-conn-{}-{}.pem",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::write(&path, contents).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// A self-signed certificate: its PEM, its DER and its key.
    struct Identity {
        cert_pem: String,
        key_pem: String,
        cert: CertificateDer<'static>,
        key: PrivateKeyDer<'static>,
    }

    fn identity(names: &[&str]) -> Identity {
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let certified = rcgen::generate_simple_self_signed(names).unwrap();
        Identity {
            cert_pem: certified.cert.pem(),
            key_pem: certified.signing_key.serialize_pem(),
            cert: certified.cert.der().clone(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                certified.signing_key.serialize_der(),
            )),
        }
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn server_config(server: &Identity, client_ca: Option<&Identity>) -> Arc<ServerConfig> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca.cert.clone()).unwrap();
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
        };
        Arc::new(
            builder
                .with_single_cert(vec![server.cert.clone()], server.key.clone_key())
                .unwrap(),
        )
    }

    type TlsPeer = Peer<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>;

    /// A one-connection TLS server; the script gets `None` when the TLS handshake failed.
    async fn serve_tls<F, Fut>(config: Arc<ServerConfig>, script: F) -> (u16, JoinHandle<()>)
    where
        F: FnOnce(Option<TlsPeer>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let peer = TlsAcceptor::from(config)
                .accept(tcp)
                .await
                .ok()
                .map(Peer::new);
            script(peer).await;
        });
        (port, task)
    }

    /// Serves a hello and one ping over TLS.
    async fn hello_and_ping(peer: Option<TlsPeer>) {
        let mut peer = peer.expect("the TLS handshake succeeds");
        peer.handshake().await;
        let ping = peer.recv().await.unwrap();
        assert_eq!(ping.message.command_name(), Some("ping"));
        peer.reply(&ping, &doc! { "ok": 1 }).await;
    }

    async fn refused_handshake(peer: Option<TlsPeer>) {
        assert!(peer.is_none(), "the TLS handshake must fail");
    }

    fn options(tls: TlsOptions) -> ConnectionOptions {
        ConnectionOptions {
            tls: Some(tls),
            connect_timeout: Duration::from_secs(5),
            ..ConnectionOptions::default()
        }
    }

    /// Connects to `host` (on `port`) with `tls`.
    async fn connect_tls(host: &str, port: u16, tls: TlsOptions) -> Result<Connection, ConnError> {
        Connection::connect(&ServerAddress::new(host, port), &options(tls)).await
    }

    /// Against a server with `config` that answers a hello and a ping: connects as `host`
    /// with `tls`, pings, waits for the server's side, and hands back the connection.
    async fn pinged_over_tls(config: Arc<ServerConfig>, host: &str, tls: TlsOptions) -> Connection {
        let (port, task) = serve_tls(config, hello_and_ping).await;
        let mut conn = connect_tls(host, port, tls).await.unwrap();
        conn.run("admin", &Ping).await.unwrap();
        task.await.unwrap();
        conn
    }

    /// Against a server with `config` whose TLS handshake must fail: connects as `host`
    /// with `tls`, waits for the server's side, and returns the client's error.
    async fn refused_over_tls(config: Arc<ServerConfig>, host: &str, tls: TlsOptions) -> ConnError {
        let (port, task) = serve_tls(config, refused_handshake).await;
        let err = connect_tls(host, port, tls).await.unwrap_err();
        task.await.unwrap();
        err
    }

    #[tokio::test]
    async fn trusted_by_the_ca_file() {
        let server = identity(&["localhost"]);
        let ca = TempFile::new(&server.cert_pem);
        let tls = TlsOptions {
            ca_file: Some(ca.0.clone()),
            ..TlsOptions::default()
        };
        let conn = pinged_over_tls(server_config(&server, None), "localhost", tls).await;
        assert!(conn.is_tls());
        assert_eq!(conn.description().max_wire_version, 21);
    }

    #[tokio::test]
    async fn server_name_override_is_checked() {
        let server = identity(&["db.internal"]);
        let ca = TempFile::new(&server.cert_pem);
        let tls = TlsOptions {
            ca_file: Some(ca.0.clone()),
            server_name: Some("db.internal".into()),
            ..TlsOptions::default()
        };
        pinged_over_tls(server_config(&server, None), "127.0.0.1", tls).await;
    }

    #[tokio::test]
    async fn unknown_issuer_is_refused_with_the_bundled_roots() {
        let server = identity(&["localhost"]);
        let config = server_config(&server, None);
        let err = refused_over_tls(config, "localhost", TlsOptions::default()).await;
        assert!(matches!(err, ConnError::Tls { .. }), "{err:?}");
        assert!(err.is_network());
    }

    #[tokio::test]
    async fn allow_invalid_certificates_accepts_anything() {
        let server = identity(&["somewhere.else"]);
        let tls = TlsOptions {
            allow_invalid_certificates: true,
            ..TlsOptions::default()
        };
        pinged_over_tls(server_config(&server, None), "127.0.0.1", tls).await;
    }

    #[tokio::test]
    async fn wrong_hostname_is_refused_unless_allowed() {
        let server = identity(&["db.internal"]);
        let ca = TempFile::new(&server.cert_pem);
        let tls = TlsOptions {
            ca_file: Some(ca.0.clone()),
            ..TlsOptions::default()
        };

        let err = refused_over_tls(server_config(&server, None), "localhost", tls.clone()).await;
        assert!(matches!(err, ConnError::Tls { .. }), "{err:?}");

        let tls = TlsOptions {
            allow_invalid_hostnames: true,
            ..tls
        };
        pinged_over_tls(server_config(&server, None), "localhost", tls).await;
    }

    #[tokio::test]
    async fn allow_invalid_hostnames_still_requires_a_trusted_chain() {
        let server = identity(&["db.internal"]);
        let tls = TlsOptions {
            allow_invalid_hostnames: true,
            ..TlsOptions::default()
        };
        let err = refused_over_tls(server_config(&server, None), "localhost", tls).await;
        assert!(matches!(err, ConnError::Tls { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn client_certificate_is_presented() {
        let server = identity(&["localhost"]);
        let client = identity(&["brook-client"]);
        let ca = TempFile::new(&server.cert_pem);
        let cert_key = TempFile::new(&format!("{}{}", client.cert_pem, client.key_pem));
        let config = server_config(&server, Some(&client));

        // Without the certificate the server refuses.
        let tls = TlsOptions {
            ca_file: Some(ca.0.clone()),
            ..TlsOptions::default()
        };
        let err = refused_over_tls(config.clone(), "localhost", tls.clone()).await;
        assert!(err.is_network(), "{err:?}");

        let tls = TlsOptions {
            cert_key_file: Some(cert_key.0.clone()),
            ..tls
        };
        pinged_over_tls(config, "localhost", tls).await;
    }

    #[tokio::test]
    async fn bad_tls_files_are_configuration_errors() {
        // Nothing listens there: configuration is checked before connecting.
        let server = identity(&["localhost"]);
        let empty = TempFile::new("");
        let cert_only = TempFile::new(&server.cert_pem);
        let garbage =
            TempFile::new("-----BEGIN CERTIFICATE-----\n%%%%\n-----END CERTIFICATE-----\n");
        let cases = [
            TlsOptions {
                ca_file: Some(std::env::temp_dir().join("brook-conn-no-such-file.pem")),
                ..TlsOptions::default()
            },
            TlsOptions {
                ca_file: Some(empty.0.clone()),
                ..TlsOptions::default()
            },
            TlsOptions {
                ca_file: Some(garbage.0.clone()),
                ..TlsOptions::default()
            },
            TlsOptions {
                cert_key_file: Some(cert_only.0.clone()),
                ..TlsOptions::default()
            },
            TlsOptions {
                cert_key_file: Some(empty.0.clone()),
                ..TlsOptions::default()
            },
            TlsOptions {
                server_name: Some("not a name!".into()),
                ..TlsOptions::default()
            },
        ];
        for tls in cases {
            let err = connect_tls("127.0.0.1", 9, tls.clone()).await.unwrap_err();
            assert!(matches!(err, ConnError::TlsConfig(_)), "{tls:?}: {err:?}");
            assert!(!err.is_network());
        }
    }
}

/// The read buffer is reused from one reply to the next once nothing else holds the
/// previous reply (a `BytesMut` reclaims its allocation when it is the only owner), and
/// only then: a reply still held forces the next read into a new allocation.
#[tokio::test]
async fn the_read_buffer_is_reused_once_the_previous_reply_is_dropped() {
    const ROUNDS: usize = 8;
    let (address, server) = serve(|mut peer| async move {
        peer.handshake().await;
        let filler = "x".repeat(20_000);
        for _ in 0..ROUNDS {
            let cmd = peer.recv().await.unwrap();
            peer.reply(&cmd, &doc! { "ok": 1, "filler": &filler }).await;
        }
    })
    .await;
    let mut conn = connect(&address).await;
    let ping = || CommandBody::new(doc! { "ping": 1, "$db": "admin" });
    // Held: every reply lands in a buffer of its own.
    let mut held = Vec::new();
    for _ in 0..ROUNDS / 2 {
        held.push(conn.run_body(ping()).await.unwrap());
    }
    let held_at: Vec<usize> = held
        .iter()
        .map(|r| r.body.as_bytes().as_ptr() as usize)
        .collect();
    for (i, a) in held_at.iter().enumerate() {
        assert!(
            !held_at[i + 1..].contains(a),
            "held replies overlap: {held_at:?}"
        );
    }
    drop(held);
    // Dropped: the buffer's allocation is reclaimed, so the replies land at the same place.
    let mut dropped_at = Vec::new();
    for _ in 0..ROUNDS / 2 {
        let reply = conn.run_body(ping()).await.unwrap();
        dropped_at.push(reply.body.as_bytes().as_ptr() as usize);
    }
    assert!(
        dropped_at.iter().all(|&a| a == dropped_at[0]),
        "the read buffer was not reused: {dropped_at:?}"
    );
    server.await.unwrap();
}

/// The header of a frame declaring `declared` bytes, answering `response_to`.
fn header_declaring(declared: i32, response_to: i32) -> Vec<u8> {
    let mut bytes = Vec::new();
    for v in [declared, 77, response_to, 2013] {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    bytes
}

/// A peer declaring a 40 MB frame then sending 100 bytes and closing costs the client a
/// buffer of the bytes that came, not of the length declared.
#[tokio::test]
async fn a_declared_large_frame_then_close_leaves_the_buffer_small() {
    let (address, server) = serve(|mut peer| async move {
        peer.handshake().await;
        let cmd = peer.recv().await.unwrap();
        let mut bytes = header_declaring(40_000_000, cmd.message.request_id);
        bytes.extend_from_slice(&[0u8; 100]);
        peer.send_raw(&bytes).await;
        // Dropping the peer closes the socket.
    })
    .await;
    let mut conn = connect(&address).await;
    let before = conn.read_buffer_capacity();
    let err = conn.run("admin", &Ping).await.unwrap_err();
    assert_closed_mid_message(&err);
    assert!(conn.is_broken());
    let after = conn.read_buffer_capacity();
    assert!(
        after <= before.max(64 * 1024) * 2,
        "the read buffer grew from {before} to {after} bytes for 116 bytes received"
    );
    server.await.unwrap();
}

/// The buffer follows the bytes of a large frame as they arrive: a peer that declares
/// 40 MB and sends 1 MB of it before going silent gets a buffer of about twice that, at
/// most, not of 40 MB.
#[tokio::test]
async fn the_read_buffer_grows_with_the_bytes_that_arrive() {
    const SENT: usize = 1024 * 1024;
    let (address, server) = serve(|mut peer| async move {
        peer.handshake().await;
        let cmd = peer.recv().await.unwrap();
        let mut bytes = header_declaring(40_000_000, cmd.message.request_id);
        bytes.resize(SENT, 0);
        peer.send_raw(&bytes).await;
        // Silence until the client gives up.
        assert!(peer.recv().await.is_none());
    })
    .await;
    let mut conn = connect_with_socket_timeout(&address, Duration::from_millis(500)).await;
    let err = conn.run("admin", &Ping).await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    let capacity = conn.read_buffer_capacity();
    assert!(
        (SENT..=2 * (SENT + 64 * 1024)).contains(&capacity),
        "{capacity} bytes of buffer for {SENT} bytes received"
    );
    drop(conn);
    server.await.unwrap();
}

/// socketTimeoutMS bounds the write too: a server that stops reading makes a large send
/// time out rather than block forever.
#[tokio::test]
async fn a_send_the_server_never_reads_times_out() {
    let (address, server) = serve(|mut peer| async move {
        peer.handshake().await;
        // Stop reading; hold the socket open until the client gives up.
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(peer);
    })
    .await;
    let limit = Duration::from_millis(300);
    let mut conn = connect_with_socket_timeout(&address, limit).await;
    // Far more than the loopback socket buffers hold while nobody reads.
    let body = doc! { "insert": "c", "pad": "w".repeat(16 * 1024 * 1024), "$db": "d" };
    let started = std::time::Instant::now();
    let err = conn.run_body(CommandBody::new(body)).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        matches!(err, ConnError::Timeout { after, .. } if after == limit),
        "{err:?}"
    );
    assert!(conn.is_broken());
    drop(conn);
    server.abort();
}
