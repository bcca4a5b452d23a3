//! brook-testkit: a scriptable, in-process fake MongoDB server for fault-injection tests.
//!
//! [`FakeServer::start`] binds `127.0.0.1` on a port the OS picks and serves OP_MSG (and
//! OP_COMPRESSED, with the compressors it is configured for) on real sockets, so a client is
//! tested exactly as it runs against a real server. The server:
//!
//! - answers with the reply shapes of MongoDB 7.0/8.0 (the [`shapes`] module builds them):
//!   hello/isMaster as a replica-set primary (or a standalone, a secondary, a mongos, with
//!   any wire version and compressor list), ping, endSessions, killCursors, find/aggregate
//!   (an empty cursor; a change-stream aggregate opens a cursor whose getMores return empty
//!   batches with a `postBatchResumeToken`), getMore (43 CursorNotFound on unknown ids),
//!   insert/update/delete, buildInfo, and 59 CommandNotFound for anything else;
//! - answers the legacy OP_QUERY handshake (`isMaster`/`hello` on `<db>.$cmd`, with or
//!   without a `$query` wrapper) with an OP_REPLY, as real servers do, so that drivers that
//!   open with it (without serverApi) can be pointed at it; other OP_QUERY commands get
//!   error 352, as from MongoDB 6;
//! - records every command it receives ([`FakeServer::commands`]): name, `$db`, body,
//!   document sequences, connection id, request id, flags and compressor; and every frame it
//!   could not decode ([`FakeServer::decode_failures`]), after which it closes that
//!   connection (client garbage never makes it panic or hang);
//! - does what the test scripts: per-command queues ([`FakeServer::push_actions`]) first,
//!   then the [`Handler`], then the defaults. An [`Action`] replies with a document or an
//!   error, waits, streams `moreToCome` replies, sends raw bytes, or injects a [`Fault`]:
//!   closing without a reply or mid-reply, a partial frame then a stall, a declared length
//!   over the limit or under 16, a body whose BSON length overruns the message, an unknown
//!   section kind, a bad checksum, a wrong `responseTo`, an unknown required flag bit, or
//!   hanging forever.
//!
//! Dropping the server, or [`FakeServer::shutdown`], stops the listener and closes every
//! connection.
//!
//! # A replica set, to test a change-stream consumer against
//!
//! [`ReplicaSet::start`] runs several fake members (each a [`FakeServer`]) that answer as
//! the members of one MongoDB 7.0/8.0 replica set, with streaming (awaitable, exhaust)
//! hello, and one change-event log that whichever member is primary serves change streams
//! from. Point any driver at [`ReplicaSet::uri`] (`mongodb://h1,h2,h3/?replicaSet=rs0`),
//! feed events with [`ReplicaSet::insert_event`] (or insert through the driver), and
//! script the failures a consumer must survive without losing or repeating an event:
//! [`ReplicaSet::step_down`] and [`ReplicaSet::elect`], [`ReplicaSet::kill`] /
//! [`ReplicaSet::stop`] and [`ReplicaSet::restart`] (same port), and
//! [`ReplicaSet::blackhole`]. Non-primaries refuse change streams and writes with 10107
//! NotWritablePrimary, a getMore on the wrong member gets 43 CursorNotFound, and a stream
//! resumed with its last token on the new primary continues exactly after it.
//!
//! ```
//! use bson::doc;
//! use brook_testkit::{ReplicaSet, ReplicaSetConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), brook_testkit::TestkitError> {
//! let set = ReplicaSet::start(ReplicaSetConfig::new("rs0")).await?;
//! let uri = set.uri(); // give this to the consumer under test
//! # let _ = uri;
//! set.insert_event("shop.orders", doc! { "_id": 1 });
//! set.step_down().await; // the consumer's getMore now fails with 10107
//! set.elect(1).await?; // …and its resume lands on member 1, right after its token
//! set.insert_event("shop.orders", doc! { "_id": 2 });
//! # set.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! To point another driver at one by hand:
//! `cargo run -p brook-testkit --example fake_server -- --replica-set rs0` prints its URI
//! and serves until its standard input closes (pymongo, for one, connects to it with
//! `directConnection=true`).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use bson::doc;
//! use brook_testkit::{shapes, Action, FakeServer, Fault, ReceivedCommand, ServerConfig};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A 7.0 primary that fails the first getMore with a resumable error, then closes the
//! // connection on the second, and answers `ping` through a handler.
//! let server = FakeServer::start(ServerConfig::replica_set("rs0").with_handler(
//!     |cmd: &ReceivedCommand| match cmd.name.as_str() {
//!         "ping" => Action::reply(doc! { "ok": 1.0, "pong": true }),
//!         _ => Action::Default,
//!     },
//! ))
//! .await?;
//! server.push_actions(
//!     "getMore",
//!     [
//!         Action::error(43, "CursorNotFound", &[shapes::RESUMABLE_CHANGE_STREAM_ERROR]),
//!         Action::fault(Fault::CloseWithoutReply),
//!     ],
//! );
//! assert!(server.uri().starts_with("mongodb://127.0.0.1:"));
//!
//! // Any client works; here a hand-made OP_MSG ping.
//! let body = doc! { "ping": 1, "$db": "admin" }.to_vec()?;
//! let mut frame = Vec::new();
//! frame.extend_from_slice(&(21 + body.len() as i32).to_le_bytes());
//! frame.extend_from_slice(&1i32.to_le_bytes()); // requestID
//! frame.extend_from_slice(&0i32.to_le_bytes()); // responseTo
//! frame.extend_from_slice(&2013i32.to_le_bytes()); // OP_MSG
//! frame.extend_from_slice(&0u32.to_le_bytes()); // flags
//! frame.push(0); // kind 0
//! frame.extend_from_slice(&body);
//! let mut socket = tokio::net::TcpStream::connect(server.addr()).await?;
//! socket.write_all(&frame).await?;
//! let mut header = [0u8; 16];
//! socket.read_exact(&mut header).await?;
//! assert_eq!(i32::from_le_bytes([header[8], header[9], header[10], header[11]]), 1);
//!
//! assert!(server.wait_for_commands(1, Duration::from_secs(5)).await);
//! let seen = server.commands();
//! assert_eq!(seen[0].name, "ping");
//! assert_eq!(seen[0].db, "admin");
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod action;
mod auth;
mod frame;
mod listen;
mod proxy;
mod record;
pub mod replay;
mod replset;
mod server;
pub mod shapes;
mod tls;

pub use action::{Action, Fault, Handler};
pub use auth::{AuthConfig, AuthServer, User};
pub use proxy::{
    CutEvent, CutPoint, CutReason, CutStyle, Proxy, ProxyConfig, ProxyStats, SplitMix64,
};
pub use record::{DecodeFailure, ReceivedCommand, ReceivedSequence};
pub use replay::{ReplayConfig, ReplayServer};
pub use replset::{ReplicaSet, ReplicaSetConfig, TopologyVersion};
/// The TLS protocol versions [`TlsHandshake::version`] names.
pub use rustls::ProtocolVersion;
pub use server::{FakeServer, ServerConfig};
pub use tls::{Identity, Leaf, TestCa, TlsHandshake, TlsServer, TlsServerBuilder};

/// Errors of brook-testkit.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// The listener could not bind `127.0.0.1:0` (or read back its address).
    #[error("could not listen on 127.0.0.1:0: {0}")]
    Bind(#[source] std::io::Error),
    /// A replica-set member could not listen again on its port.
    #[error("could not listen again on {addr}: {source}")]
    Rebind {
        /// The member's address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A replica-set operation named a member the set does not have.
    #[error("the replica set has {members} members: there is no member {index}")]
    NoSuchMember {
        /// The index asked for.
        index: usize,
        /// How many members the set has.
        members: usize,
    },
    /// A replica-set operation needs a member that is down (killed or stopped).
    #[error("member {0} of the replica set is down")]
    MemberDown(usize),
}
