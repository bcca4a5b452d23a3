//! brook: a MongoDB driver built around change streams.
//!
//! This crate is the facade: [`Client`], [`Database`], [`Collection`], [`Cursor`] and the
//! opaque [`Error`]. The wire codec (`brook-wire`), the commands (`brook-command`) and
//! one connection (`brook-conn`) live in their own crates.
//!
//! ```no_run
//! use bson::doc;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! struct Event { kind: String, n: i32 }
//!
//! # async fn demo() -> Result<(), brook::Error> {
//! let client = brook::Client::connect("mongodb://localhost:27017/?appName=indexer").await?;
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
//! let mut cursor = events.find(doc! { "kind": "bulk" }).sort(doc! { "n": 1 }).batch_size(100).await?;
//! while let Some(event) = cursor.try_next().await? {
//!     println!("{event:?}");
//! }
//! client.shutdown().await;
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
//!    not act on yet (an `is_unsupported()` error naming the feature): credentials
//!    (authentication is not implemented), `mongodb+srv://` (no DNS SRV resolution), Unix
//!    sockets, `loadBalanced=true`, `timeoutMS`, `minPoolSize > 0`, read preferences other
//!    than primary and their tags/staleness, `readConcernLevel`, proxies,
//!    `tlsCertificateKeyFilePassword`, the OCSP/revocation switches, `srvServiceName`.
//!    Nothing in a connection string is silently ignored.
//!
//! Options kept but without effect by design for now: `retryWrites`/`retryReads` (brook
//! does not retry yet), `heartbeatFrequencyMS`, `localThresholdMS`,
//! `serverMonitoringMode`, `serverSelectionTryOnce` and `maxConnecting` (no monitoring and
//! no CMAP pool yet).
//!
//! # Servers and connections
//!
//! `connect` tries the seeds in order until one completes the hello handshake. A
//! standalone (single seed), a mongos or a replica-set primary is used as is; with
//! `directConnection=true` the one seed is used whatever it is. A replica-set member that
//! is not the primary sends the search to its `primary`, then its `hosts`. The search
//! repeats until `serverSelectionTimeoutMS` (default 30 s). Every operation then goes to
//! that one server: there is no monitoring thread yet (full SDAM comes later), so after a
//! failover a new client is needed.
//!
//! Connections to it are kept in a simple cache: idle connections are reused
//! most-recently-used first, broken ones (after a network error or a cancelled operation)
//! and ones idle longer than `maxIdleTimeMS` are dropped, at most `maxPoolSize` (default
//! 100, 0 = unlimited) are in use at once, and a checkout waits at most
//! `waitQueueTimeoutMS`. A CMAP pool crate replaces it in a later issue.
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

#![forbid(unsafe_code)]

mod client;
mod coll;
mod cursor;
mod db;
mod error;
mod event;
mod options;
mod pool;
mod session;

pub use brook_command::{Namespace, WriteConcernError, WriteError};
pub use brook_conn::{ServerAddress, ServerKind};
pub use client::Client;
pub use coll::{
    AggregateBuilder, Collection, DeleteResult, FindBuilder, InsertMany, InsertManyResult,
    InsertOneResult, UpdateOne, UpdateResult,
};
pub use cursor::Cursor;
pub use db::Database;
pub use error::{Error, ErrorKind, Result};
pub use event::{
    ChangeNamespace, ChangeStreamEvent, OperationType, RawChangeEvent, ResumeToken, SplitEvent,
    TruncatedArray, UpdateDescription, resume_token_of,
};
pub use options::{
    Acknowledgment, ClientOptions, Credential, DEFAULT_PORT, Host, ReadPreferenceMode,
    ServerMonitoringMode, UriWarning, UriWarningKind,
};

/// Re-export of the `bson` crate brook is built with.
pub use bson;
