//! brook: a MongoDB driver built around change streams.
//!
//! This crate is the facade: [`Client`], [`Database`], [`Collection`], [`Cursor`],
//! [`ChangeStream`] and the opaque [`Error`]. The wire codec (`brook-wire`), the commands (`brook-command`) and
//! one connection (`brook-conn`) live in their own crates.
//!
//! The example below runs as a doc test against a scripted fake server
//! (`brook_testkit::FakeServer`, set up in the lines `rustdoc` hides); the visible lines
//! are what an application writes, with a URI such as
//! `mongodb://localhost:27017/?replicaSet=rs0&appName=indexer`.
//!
//! ```
//! use bson::doc;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! struct Event { kind: String, n: i32 }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # use brook_testkit::shapes::{BatchKind, WriteReply};
//! # use brook_testkit::{Action, FakeServer, ServerConfig};
//! # let server = FakeServer::start(ServerConfig::replica_set("rs0")).await?;
//! # let bulk = |n: i32| doc! { "_id": n, "kind": "bulk", "n": n };
//! # server.push_action("find", Action::cursor(0, "app.events", BatchKind::First, vec![bulk(0), bulk(1)], None, None));
//! # server.push_action("update", WriteReply::new(1).modified(1).to_document());
//! # server.push_action("delete", WriteReply::new(1).to_document());
//! # server.push_action("aggregate", Action::cursor(0, "app.events", BatchKind::First,
//! #     vec![doc! { "_id": "bulk", "count": 1000 }], None, None));
//! # let uri = format!("mongodb://{}/?replicaSet=rs0&appName=indexer", server.host_port());
//! let client = brook::Client::connect(&uri).await?;
//! let db = client.database("app");
//! db.run_command(doc! { "ping": 1 }).await?;
//!
//! let events = db.collection::<Event>("events");
//! events.insert_one(Event { kind: "created".into(), n: 1 }).await?;
//! events
//!     .insert_many((0..1000).map(|n| Event { kind: "bulk".into(), n }))
//!     .ordered(false)
//!     .await?;
//!
//! // A cursor yields `Event`s, fetching more batches (getMore) as it goes.
//! let mut cursor = events.find(doc! { "kind": "bulk" }).sort(doc! { "n": 1 }).batch_size(100).await?;
//! let mut first = Vec::new();
//! while let Some(event) = cursor.try_next().await? {
//!     first.push(event.n);
//! }
//! # assert_eq!(first, [0, 1]); // what the fake server was scripted to return
//!
//! let updated = events.update_one(doc! { "n": 1 }, doc! { "$set": { "kind": "seen" } }).await?;
//! assert_eq!(updated.modified_count, 1);
//! let deleted = events.delete_one(doc! { "kind": "created" }).await?;
//! assert_eq!(deleted.deleted_count, 1);
//!
//! // An aggregation's results come back as documents (`with_type` picks another type).
//! let mut counts = events
//!     .aggregate(vec![doc! { "$group": { "_id": "$kind", "count": { "$sum": 1 } } }])
//!     .with_type::<bson::Document>()
//!     .await?;
//! while let Some(group) = counts.try_next().await? {
//!     println!("{}: {}", group.get_str("_id")?, group.get_i32("count")?);
//! }
//! client.shutdown().await;
//! # let inserted: usize = server.commands_named("insert").iter()
//! #     .map(|c| c.sequence("documents").map_or(0, <[_]>::len)).sum();
//! # assert_eq!(inserted, 1001);
//! # Ok(()) }
//! ```
//!
//! # Connection strings
//!
//! [`ClientOptions::parse`] implements the Connection String and URI Options specs and
//! passes their test suites: `mongodb://` and `mongodb+srv://`, percent-decoded
//! credentials, host names, IPv4, `[IPv6]` literals and `%2F`-encoded Unix socket paths,
//! the default database, and every option of the URI Options spec with its type, range
//! and conflict rules; keys are case-insensitive.
//!
//! The spec asks drivers to *warn and ignore* unknown keys, values of the wrong type and
//! repeated keys. brook's policy, in two steps:
//!
//! 1. **Parsing is the spec's.** `parse` fails exactly where the spec says a URI is
//!    invalid; what the spec says to ignore is left out of the options and listed in
//!    [`ClientOptions::warnings`] ([`UriWarning`], with a [`UriWarningKind`]).
//! 2. **Connecting is strict.** [`Client::connect`] / [`Client::with_options`] call
//!    [`ClientOptions::check_supported`], which refuses options with any warning (an
//!    `is_invalid_argument()` error naming each one) and options brook parses but does
//!    not act on yet (an `is_unsupported()` error naming the feature): the GSSAPI,
//!    MONGODB-AWS and MONGODB-OIDC mechanisms, Unix sockets,
//!    `readConcernLevel`, proxies, `tlsCertificateKeyFilePassword` (keys are not
//!    decrypted), and `tlsDisableOCSPEndpointCheck=false` /
//!    `tlsDisableCertificateRevocationCheck=false` (see TLS below). Nothing in a
//!    connection string is silently ignored.
//!
//! A `mongodb+srv://` URI is resolved at connect (SRV seeds, TXT options, TLS on by
//! default) and its SRV records polled for mongos discovery: see [`srv`].
//!
//! Options kept but without effect by design for now: `serverSelectionTryOnce` (a
//! single-threaded-driver option).
//!
//! # TLS
//!
//! `tls=true` (or `tlsCAFile` / `tlsCertificateKeyFile`) connects over rustls with TLS
//! 1.3 and 1.2, sending SNI for a host name (never for an IP address). The server's
//! chain is checked against the operating system's root store (`rustls-native-certs`,
//! read once per process), plus the bundled Mozilla roots with the `webpki-roots` cargo
//! feature; with `tlsCAFile`, against that file's CAs only. `tlsCertificateKeyFile`
//! holds the client certificate and its unencrypted key (an encrypted key is refused
//! saying so). `tlsAllowInvalidHostnames` still requires a trusted chain;
//! `tlsAllowInvalidCertificates` and `tlsInsecure` accept any certificate (for tests).
//! rustls makes no revocation check (no OCSP, stapled or fetched, and no CRL), so
//! `tlsDisableOCSPEndpointCheck=true` and `tlsDisableCertificateRevocationCheck=true`
//! are accepted as describing what happens, and `=false` is refused.
//!
//! # Authentication
//!
//! Credentials in the URI are authenticated on every pooled connection right after its
//! hello, per the MongoDB Authentication specification (the IO-free conversation is the
//! `brook-auth` crate): SCRAM-SHA-256 and SCRAM-SHA-1 (without `authMechanism` the hello
//! asks for `saslSupportedMechs` and SCRAM-SHA-256 is used when the server offers it),
//! the SHA-256 password SASLprep'd, speculative authentication inside the hello with
//! `saslStart`/`saslContinue` when the server ignores it, the server's signature
//! checked (a server that cannot prove it knows the password is refused), salted
//! passwords cached per client; MONGODB-X509 (the client certificate of
//! `tlsCertificateKeyFile`, user name optional) and PLAIN (`$external`). The source is
//! `authSource`, else the URI's database, else `admin` (`$external` for X.509 and
//! PLAIN's default); [`ClientOptions::auth_credential`] shows the result. Monitoring
//! connections never authenticate. A failed authentication is an error naming the
//! mechanism and the user, never the password; it is not retried.
//!
//! # Behind a load balancer
//!
//! With `loadBalanced=true` (one host, no `replicaSet`, no `directConnection`) the host
//! is a load balancer in front of mongoses, as the Load Balancer specification says:
//! every connection's handshake says `loadBalanced: true` and must get a `serviceId`
//! back (else connecting fails with an error saying so); nothing monitors the load
//! balancer; a cursor keeps the connection it was opened on for its getMores and its
//! killCursors (returned to the pool once the cursor ends), and a change stream runs on
//! its own connection, resuming on a new one; an error clears only the connections of
//! the failing connection's service, and never marks the server Unknown.
//!
//! # Read preferences and retries
//!
//! `readPreference`, `readPreferenceTags` and `maxStalenessSeconds` give the client's
//! default [`ReadPreference`]; [`Database::with_read_preference`],
//! [`Collection::with_read_preference`], and the `read_preference` of the find,
//! aggregate and watch builders override it. Reads select among the servers the
//! preference allows (mode, tag sets tried in order, staleness), then among those within
//! `localThresholdMS` (default 15 ms) of the fastest, two at random, keeping the one with
//! fewer operations in flight; the command carries `$readPreference` where the Server
//! Selection specification says (mongos, secondaries, direct connections). Writes and
//! `run_command` go to the primary. A change stream's `aggregate` (the first and every
//! resume's) selects by the stream's preference; its getMores follow the cursor.
//!
//! Retries follow the Retryable Reads and Writes specifications. With `retryReads`
//! (default on), find, aggregate (without `$out`/`$merge`) and a change stream's
//! `aggregate` run once more after a network error or a "not primary"/"shutting down"
//! class of error, on a server selected afresh. With `retryWrites` (default on),
//! `insert_one`, `insert_many`, `update_one` and `delete_one` carry a `txnNumber` in
//! their session (on servers that support it: not a standalone, not `w=0`) and run once
//! more, with the same `txnNumber`, after a network error or an error labelled
//! `RetryableWriteError`. `run_command` and getMores are never retried.
//!
//! # Servers and connections
//!
//! The client follows the deployment as the SDAM specification says (the
//! `brook-topology` crate): one monitor per server, on a connection of its own, checks it
//! with `hello` every `heartbeatFrequencyMS` (default 10 s; sooner when an error or a
//! waiting operation asks, never more often than every 500 ms), and the topology adds
//! the members a replica set names and drops the ones it does not. `connect` returns once
//! a server for the client's default read preference (the primary unless the URI says
//! otherwise; a mongos, a standalone, the one server of `directConnection=true`) is
//! found, within `serverSelectionTimeoutMS` (default 30 s); a seed list holding only a
//! secondary is enough. Every operation selects afresh, so after an election operations
//! and change-stream resumes go to the new primary, while a cursor's getMores and
//! killCursors stay on its own server. A failed heartbeat marks the server Unknown and
//! clears its pool, interrupting the commands in flight on it: a change stream stuck in a
//! getMore on a lost primary resumes at once on the new one.
//!
//! One executor runs every command of every operation: it selects the server, checks a
//! connection out of the server's pool, attaches the session's `lsid` and the highest
//! `$clusterTime` seen, sends, keeps the reply's `$clusterTime` if higher, and applies the
//! SDAM error rules. The pool follows the CMAP specification: `maxPoolSize` (default 100,
//! 0 = unlimited), `minPoolSize` (filled in the background), `maxConnecting` (default 2),
//! `maxIdleTimeMS`, `waitQueueTimeoutMS`, a FIFO wait queue, and generations. A network
//! error (or a failed handshake) clears the pool — every connection made before it is
//! closed instead of reused — and marks the server unknown; operations then wait (up to
//! `serverSelectionTimeoutMS`) until its monitor finds it again. "Not primary" and
//! "node is recovering" errors mark the server unknown too (and clear the pool for
//! shutdown codes and servers before 4.2). The topology decides these (SDAM "error
//! handling"), also for failed handshakes. Pool events reach
//! [`ClientOptions::cmap_event_handler`] and `tracing` (target `brook::pool`); see
//! [`monitoring`].
//!
//! **What the driver is doing.** Every command is a `tracing` span (`brook.command`,
//! target `brook::command`: name, database, server, request id, duration, outcome)
//! inside its operation's; at `TRACE` the command and its reply are shown, redacted
//! (authentication commands and their replies as `{}`) and truncated to 1000 bytes.
//! Command monitoring events (started, succeeded, failed) reach
//! [`ClientOptions::command_event_handler`]; with the cargo feature `metrics`, command
//! durations, change-stream events, lag and resumes, and pool checkouts are recorded
//! through the `metrics` facade (see `brook::metrics`). Nothing is built for a listener
//! that is not there. See [`monitoring`] and the `metrics-prometheus` program of `examples/` (`examples/src/metrics_prometheus.rs`).
//!
//! **Time bounds.** Connecting (resolve, TCP, TLS, hello) is bounded by
//! `connectTimeoutMS`; every exchange after it by `socketTimeoutMS` when set; a checkout
//! by `waitQueueTimeoutMS` and server selection by `serverSelectionTimeoutMS`. A getMore
//! that may wait on the server (a change stream's, or an awaitData cursor's) is bounded
//! by its `maxAwaitTimeMS` (the server's 1 s default when unset) plus
//! [`GET_MORE_GRACE`] (10 s), or `socketTimeoutMS` when shorter: past it the connection
//! is discarded as after a network timeout, and a change stream resumes. Background
//! `killCursors` are bounded by 10 s, each `endSessions` at shutdown by 5 s. Without
//! `socketTimeoutMS`, a command on a server that stops answering is cut short by that
//! server's monitor: a failed heartbeat (within about `heartbeatFrequencyMS` plus twice
//! `connectTimeoutMS`) interrupts every command in flight on it. A server that keeps
//! answering heartbeats but not one slow command is bounded only by `socketTimeoutMS`,
//! or by `timeoutMS`.
//!
//! **`timeoutMS`** (Client Side Operations Timeout), set in the connection string or with
//! `with_timeout` on a [`Database`] or [`Collection`] (inherited client → database →
//! collection) or `.timeout(…)` on an operation's builder: one deadline computed when the
//! operation starts bounds all of it (server selection within
//! `min(serverSelectionTimeoutMS, time left)`, the checkout, each command, every retry:
//! retryable errors are retried while time is left). Each command carries `maxTimeMS` =
//! time left − the server's minimum round trip, and is not sent when that is not
//! positive. An expiry is an [`Error::is_timeout`] error (also
//! [`Error::is_operation_timeout`]); the connection of a command cut short is closed, its
//! pool is not cleared. Once `timeoutMS` is set `socketTimeoutMS`, `waitQueueTimeoutMS`,
//! `wTimeoutMS` and operations' `max_time` are ignored; `timeoutMS=0` means no limit.
//! Cursors follow their [`TimeoutMode`]; `Cursor::close` gets a fresh `timeoutMS`.
//!
//! # Sessions
//!
//! When the server reports `logicalSessionTimeoutMinutes`, every command carries an
//! implicit session's `lsid` (`{id: <UUID v4, binary subtype 4>}`). Server sessions are
//! pooled and reused most-recently-used first; sessions with less than a minute left
//! before the server would time them out, or that saw a network error, are discarded. A
//! [`Cursor`] keeps its session for its getMores until it is exhausted, closed or dropped.
//! [`Client::shutdown`] sends `endSessions` with the pooled ids (10,000 per command) and
//! makes later operations fail ([`Error::is_shutdown`]).
//!
//! # Writes
//!
//! `w`, `wTimeoutMS` and `journal` from the URI become the `writeConcern` of every
//! insert, update and delete.
//! `insert_one` and `insert_many` add an ObjectId `_id` to documents without one (the
//! caller's value is serialised first, never changed). `insert_many` splits its input
//! by the server's `maxWriteBatchSize` and by `maxMessageSizeBytes` less 16 KiB for the
//! command and framing; ordered inserts (the default) stop at the first batch with a
//! write error. Write errors and write concern errors are [`Error`]s with
//! [`Error::code`] and [`Error::write_errors`] (indices relative to the whole input).
//!
//! # Cursors
//!
//! [`Collection::find`] and [`Collection::aggregate`] return builders (batch size,
//! limit, sort, projection, comment, max time...) that are awaited for a [`Cursor`]. A
//! cursor is a `futures_core::Stream<Item = Result<T, Error>>` (and has
//! [`Cursor::try_next`]); documents are deserialised one at a time from the batch
//! buffer; getMores go to the server that made the cursor. [`Cursor::close`] sends
//! `killCursors` and reports its outcome; dropping an open cursor sends it in the
//! background when a tokio runtime is running.
//!
//! # Change streams
//!
//! [`Collection::watch`], [`Database::watch`] and [`Client::watch`] (the whole
//! deployment: `aggregate: 1` on `admin` with `allChangesForCluster`) return a
//! [`WatchBuilder`]; set options on it (`pipeline`, `full_document`,
//! `full_document_before_change`, `resume_after`, `start_after`,
//! `start_at_operation_time`, `max_await_time`, `batch_size`, `collation`, `comment`,
//! `show_expanded_events`, `session`), choose what it yields (`with_type::<U>()` for
//! [`ChangeStreamEvent<U>`], `raw()` for undecoded [`RawChangeEvent`]s), and `.await` it
//! for a [`ChangeStream`]. Awaiting runs the initial `aggregate`; its errors are
//! returned, never resumed.
//!
//! Delivery across restarts is **at least once** (see `docs/change-streams.md`): handle
//! an event, then save the stream's position; a crash between the two handles that
//! event again after the restart, never skips one, so handling must be idempotent. The
//! position is saved with [`checkpoint::FileCheckpoint`], which replaces its file
//! atomically (temporary file, fsync, rename), so a crash mid-save leaves the previous
//! position, never a torn one. (Within one running stream, resumes after failures lose
//! and repeat nothing.)
//!
//! ```
//! use std::time::Duration;
//! use bson::doc;
//! use brook::FullDocument;
//! use brook::checkpoint::{Checkpoint, CheckpointStore, FileCheckpoint};
//! use serde::Deserialize;
//!
//! #[derive(Debug, Deserialize)]
//! struct Order { sku: String, qty: i32 }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # use brook_testkit::{ReplicaSet, ReplicaSetConfig};
//! # let set = ReplicaSet::start(ReplicaSetConfig::new("rs0").with_max_await(Duration::from_millis(100))).await?;
//! # let uri = set.uri();
//! # let dir = std::env::temp_dir().join(format!("brook-lib-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! # let checkpoint_path = dir.join("orders.checkpoint");
//! let client = brook::Client::connect(&uri).await?;
//! let orders = client.database("shop").collection::<Order>("orders");
//! let mut store = FileCheckpoint::new(&checkpoint_path)?;
//! let watch = orders
//!     .watch()
//!     .pipeline(vec![doc! { "$match": { "operationType": { "$in": ["insert", "update"] } } }])
//!     .full_document(FullDocument::UpdateLookup)
//!     .max_await_time(Duration::from_millis(500));
//! let watch = match store.load().await? {
//!     Some(saved) => saved.apply_to(watch), // continue after the last saved position
//!     None => watch,                        // first run: from now
//! };
//! let mut stream = watch.await?;
//! # for (n, sku) in ["apple", "pear"].into_iter().enumerate() { // orders come in
//! #     set.insert_event("shop.orders", doc! { "_id": n as i32, "sku": sku, "qty": 2 });
//! # }
//! # let mut handled = Vec::new();
//! while let Some(event) = stream.next().await {
//!     let event = event?;
//!     if let Some(order) = &event.full_document {
//!         println!("{:?} {} × {}", event.operation_type, order.qty, order.sku); // handle it
//! #       handled.push(order.sku.clone());
//!     }
//!     // Then save its position: at-least-once (a crash before this line replays it).
//!     store.save(&Checkpoint::resume_after(event.id)).await?;
//! #   if handled.len() == 2 { break; }
//! }
//! stream.close().await?;
//! # assert_eq!(handled, ["apple", "pear"]);
//! # let saved = FileCheckpoint::new(&checkpoint_path)?.load().await?.expect("saved");
//! # assert_eq!(saved.token.to_document()?, *set.events()[1].get_document("_id")?);
//! # client.shutdown().await;
//! # set.shutdown().await;
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(()) }
//! ```
//!
//! A [`ChangeStream`] is a `futures_core::Stream<Item = Result<E, Error>>`;
//! [`ChangeStream::next`] waits for the next event (`getMore` after `getMore`), and
//! [`ChangeStream::next_if_any`] sends at most one `getMore` and returns `Ok(None)` when
//! its batch is empty — [`ChangeStream::resume_token`] then holds the batch's
//! `postBatchResumeToken`, which is how a quiet stream keeps its token fresh.
//!
//! Resuming follows the Change Streams specification, decided by the sans-IO machine of
//! `brook-changestream`: a `getMore` that fails with a network error, a socket timeout,
//! 43 CursorNotFound, an error labelled `ResumableChangeStreamError` (wire version ≥ 9)
//! or a code of the spec's list (wire version < 9) makes the stream kill the old cursor
//! on its own server (errors ignored) and send the `aggregate` again with `resumeAfter`
//! the cached token (`startAfter` if the stream was started with it and returned no
//! event yet; `startAtOperationTime` when there is no token), once per error. Anything
//! else (e.g. 280 ChangeStreamFatalError, 286 ChangeStreamHistoryLost, an event without
//! `_id`: [`Error::is_missing_resume_token`]) is returned once and closes the stream
//! ([`ChangeStream::is_alive`] is false, later calls yield `None`). An `invalidate` event
//! ends the stream after it is handed out. [`ChangeStream::close`] kills the cursor and
//! reports the outcome; dropping an open stream kills it in the background.
//! [`ChangeStream::resume_count`] and [`ChangeStream::get_more_count`] count what
//! happened.
//!
//! Beyond the specification, per stream (see `docs/change-streams.md`): a
//! [`ResumePolicy`] that retries failed resumes with a jittered back-off within caps,
//! every attempt reported as a [`ResumeEvent`] ([`WatchBuilder::on_resume`],
//! [`ChangeStream::last_resume`]); [`HistoryLost::RestartFromNow`] for a token that fell
//! off the oplog (the gap reported once as [`Error::history_gap`]);
//! [`WatchBuilder::split_large_events`] for events over 16 MiB, handed out whole;
//! [`ChangeStream::next_batch`] with the token to store after each batch (and
//! [`checkpoint`] to store it); [`ChangeStream::stats`] (rates, resumes, wall-clock and
//! server-side lag); [`WatchBuilder::timeout`] (`timeoutMS` per call);
//! [`ResumeToken::cluster_time`].
//!
//! Every command of a stream (its `aggregate`s, `getMore`s and `killCursors`) carries
//! the `lsid` of one session: an implicit one held for the stream's life, or the
//! [`ClientSession`] given to [`WatchBuilder::session`] (from [`Client::start_session`]).
//!
//! **Cancellation.** Every way of waiting on a stream ([`ChangeStream::next`],
//! [`ChangeStream::next_if_any`], `StreamExt::next`, `TryStreamExt::try_next`) is
//! cancellation safe: the command in flight belongs to the stream, so dropping the
//! future that awaits it (a timeout, a lost `select!` branch) costs nothing — the next
//! call takes its reply, with no resume and nothing lost or repeated.
//!
//! **Connections.** A `getMore` may wait `maxAwaitTimeMS` on the server. So that streams
//! never starve other operations, each change stream holds one connection of its own,
//! checked out of the pool outside the `maxPoolSize` accounting (budget one connection
//! per open stream on top of `maxPoolSize`). It is still a pool connection: its pool's
//! generations apply, so after a pool clear the stream's next command runs on a new
//! connection, never on one from before the clear. The resume's `killCursors` runs in
//! the background on a pooled connection and never delays the resume.
//!
//! **Nothing leaked.** A `watch()` future dropped while its `aggregate` is in flight, or
//! a stream closed or dropped during a resume, finishes that `aggregate` in the
//! background and kills the cursor it opens. A command abandoned mid-flight marks its
//! session dirty, so its `lsid` is never used again.

#![forbid(unsafe_code)]

mod change_stream;
pub mod checkpoint;
mod client;
mod coll;
mod cursor;
mod db;
mod error;
mod event;
mod everyday;
mod exec;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod monitoring;
mod options;
mod redact;
mod resume;
mod session;
pub mod srv;
mod stats;

pub use brook_changestream::{TokenInfo, TokenType};
pub use brook_command::{Namespace, WriteConcernError, WriteError};
pub use brook_conn::{ServerAddress, ServerKind};
pub use change_stream::{
    Batch, ChangeStream, ChangeStreamItem, FullDocument, FullDocumentBeforeChange, WatchBuilder,
};
pub use client::Client;
pub use coll::{
    AggregateBuilder, Collection, DeleteResult, FindBuilder, InsertMany, InsertManyResult,
    InsertOneResult, UpdateOne, UpdateResult,
};
pub use cursor::Cursor;
pub use db::Database;
pub use error::{Error, Result};
pub use event::{
    ChangeNamespace, ChangeStreamEvent, OperationType, RawChangeEvent, ResumeToken, SplitEvent,
    TruncatedArray, UpdateDescription, resume_token_of,
};
pub use everyday::{
    CountDocumentsBuilder, CreateIndex, CreateIndexResult, DatabaseSpecification, DeleteMany,
    DistinctBuilder, DropIndex, EstimatedDocumentCount, FindOne, FindOneAndDelete,
    FindOneAndReplace, FindOneAndUpdate, ListCollectionsBuilder, ListDatabasesBuilder,
    ListIndexesBuilder, ReplaceOne, ReturnDocument, UpdateMany,
};
pub use exec::GET_MORE_GRACE;
pub use options::{
    Acknowledgment, ClientOptions, Credential, DEFAULT_PORT, Host, ReadPreference,
    ReadPreferenceMode, ServerMonitoringMode, TagSet, TimeoutMode, UriWarning, UriWarningKind,
};
pub use redact::redact_uri;
pub use resume::{HistoryGap, HistoryLost, ResumeCause, ResumeEvent, ResumeOutcome, ResumePolicy};
pub use session::ClientSession;
pub use stats::StreamStats;

/// A BSON document in a refcounted buffer: how events and resume tokens share the reply's
/// buffer ([`RawChangeEvent::as_shared`], [`ResumeToken::as_shared`]).
pub use brook_wire::SharedDoc;
/// The error of [`SharedDoc`]'s constructors (a malformed document).
pub use brook_wire::WireError;

/// Re-export of the `bson` crate brook is built with.
pub use bson;
