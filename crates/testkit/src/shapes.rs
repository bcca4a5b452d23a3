//! Documents shaped like the replies and change events of MongoDB 7.0 and 8.0.
//!
//! Every function here is pure: it builds a [`bson::Document`] from its arguments, with the
//! field names, field order and BSON types a real `mongod` uses (`ok` is a double, counts and
//! codes are int32, cursor ids are int64, times are BSON timestamps). The fake server uses them
//! for its default replies; tests use them to script replies of their own.
//!
//! ```
//! use bson::{doc, Timestamp};
//! use brook_testkit::shapes::{self, BatchKind};
//!
//! let ts = Timestamp { time: 1_700_000_000, increment: 1 };
//! let event = shapes::insert_event(ts, "shop.orders", doc! { "_id": 1, "qty": 2 });
//! let reply = shapes::cursor_reply(
//!     7,
//!     "shop.orders",
//!     BatchKind::Next,
//!     vec![event],
//!     Some(shapes::post_batch_resume_token(ts)),
//!     Some(ts),
//! );
//! let cursor = reply.get_document("cursor").unwrap();
//! assert_eq!(cursor.get_i64("id").unwrap(), 7);
//! assert_eq!(cursor.get_array("nextBatch").unwrap().len(), 1);
//! ```

use bson::oid::ObjectId;
use bson::spec::BinarySubtype;
use bson::{Binary, Bson, DateTime, Document, Timestamp, doc};

/// Wire version of MongoDB 4.2 (the oldest the change-stream label rules treat as "modern").
pub const WIRE_VERSION_4_2: i32 = 8;
/// Wire version of MongoDB 7.0.
pub const WIRE_VERSION_7_0: i32 = 21;
/// Wire version of MongoDB 8.0.
pub const WIRE_VERSION_8_0: i32 = 25;

/// The server error codes the tests of brook use most, as `(code, codeName)` pairs.
pub mod codes {
    /// 6 HostUnreachable (resumable before wire version 9).
    pub const HOST_UNREACHABLE: (i32, &str) = (6, "HostUnreachable");
    /// 7 HostNotFound.
    pub const HOST_NOT_FOUND: (i32, &str) = (7, "HostNotFound");
    /// 11 UserNotFound.
    pub const USER_NOT_FOUND: (i32, &str) = (11, "UserNotFound");
    /// 13 Unauthorized.
    pub const UNAUTHORIZED: (i32, &str) = (13, "Unauthorized");
    /// 26 NamespaceNotFound.
    pub const NAMESPACE_NOT_FOUND: (i32, &str) = (26, "NamespaceNotFound");
    /// 43 CursorNotFound (always resumable for change streams).
    pub const CURSOR_NOT_FOUND: (i32, &str) = (43, "CursorNotFound");
    /// 50 MaxTimeMSExpired.
    pub const MAX_TIME_MS_EXPIRED: (i32, &str) = (50, "MaxTimeMSExpired");
    /// 59 CommandNotFound.
    pub const COMMAND_NOT_FOUND: (i32, &str) = (59, "CommandNotFound");
    /// 63 StaleShardVersion.
    pub const STALE_SHARD_VERSION: (i32, &str) = (63, "StaleShardVersion");
    /// 89 NetworkTimeout.
    pub const NETWORK_TIMEOUT: (i32, &str) = (89, "NetworkTimeout");
    /// 91 ShutdownInProgress.
    pub const SHUTDOWN_IN_PROGRESS: (i32, &str) = (91, "ShutdownInProgress");
    /// 133 FailedToSatisfyReadPreference.
    pub const FAILED_TO_SATISFY_READ_PREFERENCE: (i32, &str) =
        (133, "FailedToSatisfyReadPreference");
    /// 136 CappedPositionLost.
    pub const CAPPED_POSITION_LOST: (i32, &str) = (136, "CappedPositionLost");
    /// 150 StaleEpoch.
    pub const STALE_EPOCH: (i32, &str) = (150, "StaleEpoch");
    /// 189 PrimarySteppedDown.
    pub const PRIMARY_STEPPED_DOWN: (i32, &str) = (189, "PrimarySteppedDown");
    /// 216 ElectionInProgress (never resumable).
    pub const ELECTION_IN_PROGRESS: (i32, &str) = (216, "ElectionInProgress");
    /// 234 RetryChangeStream.
    pub const RETRY_CHANGE_STREAM: (i32, &str) = (234, "RetryChangeStream");
    /// 262 ExceededTimeLimit.
    pub const EXCEEDED_TIME_LIMIT: (i32, &str) = (262, "ExceededTimeLimit");
    /// 280 ChangeStreamFatalError.
    pub const CHANGE_STREAM_FATAL_ERROR: (i32, &str) = (280, "ChangeStreamFatalError");
    /// 286 ChangeStreamHistoryLost.
    pub const CHANGE_STREAM_HISTORY_LOST: (i32, &str) = (286, "ChangeStreamHistoryLost");
    /// 9001 SocketException.
    pub const SOCKET_EXCEPTION: (i32, &str) = (9001, "SocketException");
    /// 10334 BSONObjectTooLarge (e.g. a change event over 16 MiB without
    /// `$changeStreamSplitLargeEvent`; never resumable).
    pub const BSON_OBJECT_TOO_LARGE: (i32, &str) = (10334, "BSONObjectTooLarge");
    /// 10107 NotWritablePrimary.
    pub const NOT_WRITABLE_PRIMARY: (i32, &str) = (10107, "NotWritablePrimary");
    /// 11000 DuplicateKey.
    pub const DUPLICATE_KEY: (i32, &str) = (11000, "DuplicateKey");
    /// 11600 InterruptedAtShutdown.
    pub const INTERRUPTED_AT_SHUTDOWN: (i32, &str) = (11600, "InterruptedAtShutdown");
    /// 11602 InterruptedDueToReplStateChange.
    pub const INTERRUPTED_DUE_TO_REPL_STATE_CHANGE: (i32, &str) =
        (11602, "InterruptedDueToReplStateChange");
    /// 13388 StaleConfig.
    pub const STALE_CONFIG: (i32, &str) = (13388, "StaleConfig");
    /// 13435 NotPrimaryNoSecondaryOk.
    pub const NOT_PRIMARY_NO_SECONDARY_OK: (i32, &str) = (13435, "NotPrimaryNoSecondaryOk");
    /// 13436 NotPrimaryOrSecondary.
    pub const NOT_PRIMARY_OR_SECONDARY: (i32, &str) = (13436, "NotPrimaryOrSecondary");
    /// 64 WriteConcernFailed (as found in `writeConcernError`).
    pub const WRITE_CONCERN_FAILED: (i32, &str) = (64, "WriteConcernFailed");
}

/// The error label a server attaches to errors a change stream may resume after.
pub const RESUMABLE_CHANGE_STREAM_ERROR: &str = "ResumableChangeStreamError";
/// The error label a server attaches to errors a retryable write may be retried after.
pub const RETRYABLE_WRITE_ERROR: &str = "RetryableWriteError";
/// The error label of errors raised inside a transaction that may be retried as a whole.
pub const TRANSIENT_TRANSACTION_ERROR: &str = "TransientTransactionError";

/// What kind of server a hello reply describes.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// The primary of a replica set (the default: change streams need a replica set).
    ReplicaSetPrimary {
        /// The replica set's name (`setName`).
        set_name: String,
    },
    /// A secondary of a replica set.
    ReplicaSetSecondary {
        /// The replica set's name (`setName`).
        set_name: String,
    },
    /// A standalone `mongod`: no `setName`, no `$clusterTime`, no `operationTime`.
    Standalone,
    /// A `mongos` router (`msg: "isdbgrid"`).
    Mongos,
}

impl Topology {
    /// A replica-set primary of the set `name`.
    pub fn replica_set(name: impl Into<String>) -> Topology {
        Topology::ReplicaSetPrimary {
            set_name: name.into(),
        }
    }

    /// The replica set's name, if this is a replica-set member.
    pub fn set_name(&self) -> Option<&str> {
        match self {
            Topology::ReplicaSetPrimary { set_name }
            | Topology::ReplicaSetSecondary { set_name } => Some(set_name),
            Topology::Standalone | Topology::Mongos => None,
        }
    }

    /// Whether replies of this server carry `$clusterTime` and `operationTime`.
    pub fn has_cluster_time(&self) -> bool {
        !matches!(self, Topology::Standalone)
    }
}

impl Default for Topology {
    fn default() -> Self {
        Topology::replica_set("rs0")
    }
}

/// Everything a hello (or legacy isMaster) reply says about a server.
///
/// The [`Default`] is a MongoDB 7.0 replica-set primary of the set `rs0`.
#[derive(Debug, Clone, PartialEq)]
pub struct HelloOptions {
    /// The kind of server.
    pub topology: Topology,
    /// `minWireVersion` (0 for every current server).
    pub min_wire_version: i32,
    /// `maxWireVersion`: 21 for 7.0 ([`WIRE_VERSION_7_0`]), 25 for 8.0, 8 for 4.2.
    pub max_wire_version: i32,
    /// `maxBsonObjectSize` (16 MiB).
    pub max_bson_object_size: i32,
    /// `maxMessageSizeBytes` (48,000,000).
    pub max_message_size_bytes: i32,
    /// `maxWriteBatchSize` (100,000).
    pub max_write_batch_size: i32,
    /// `logicalSessionTimeoutMinutes` (30); `None` leaves it out, as a server without
    /// sessions would.
    pub logical_session_timeout_minutes: Option<i32>,
    /// The `compression` list of the reply; left out when empty. (The fake server puts here
    /// the client's compressors it supports, in the client's order.)
    pub compression: Vec<String>,
    /// `me` and the primary's address; the fake server fills in its own address when empty.
    pub me: String,
    /// `hosts` of the replica set; the fake server uses `[me]` when empty.
    pub hosts: Vec<String>,
    /// `topologyVersion.processId`.
    pub process_id: ObjectId,
    /// `topologyVersion.counter`.
    pub topology_counter: i64,
    /// `electionId` of a primary.
    pub election_id: ObjectId,
    /// `setVersion` of a replica-set member.
    pub set_version: i32,
    /// Answer the legacy `isMaster` shape (`ismaster: true`) instead of `isWritablePrimary`.
    pub legacy: bool,
    /// Behind a load balancer: the services (mongoses) it spreads connections over. A
    /// hello with `loadBalanced: true` is answered with the `serviceId` of one of them
    /// (the fake server takes them in turn, one per connection); without it, or when
    /// this is empty, the reply has no `serviceId`. [`hello_reply`] sends the first.
    pub service_ids: Vec<ObjectId>,
}

impl Default for HelloOptions {
    fn default() -> Self {
        HelloOptions {
            topology: Topology::default(),
            min_wire_version: 0,
            max_wire_version: WIRE_VERSION_7_0,
            max_bson_object_size: 16 * 1024 * 1024,
            max_message_size_bytes: 48_000_000,
            max_write_batch_size: 100_000,
            logical_session_timeout_minutes: Some(30),
            compression: Vec::new(),
            me: String::new(),
            hosts: Vec::new(),
            process_id: ObjectId::from_bytes([
                0x65, 0x5f, 0x1a, 0x00, 0xb0, 0x0c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
            ]),
            topology_counter: 6,
            election_id: ObjectId::from_bytes([
                0x7f, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
            ]),
            set_version: 1,
            legacy: false,
            service_ids: Vec::new(),
        }
    }
}

/// The `$clusterTime` document a replica-set member or mongos gossips: the time and a
/// signature (an all-zero HMAC with key id 0, as a server without keys sends).
pub fn cluster_time(ts: Timestamp) -> Document {
    doc! {
        "clusterTime": ts,
        "signature": {
            "hash": Binary { subtype: BinarySubtype::Generic, bytes: vec![0u8; 20] },
            "keyId": 0i64,
        },
    }
}

/// Append `$clusterTime` and `operationTime` (both `ts`) to a reply, as a replica-set member
/// does to every reply.
pub fn with_cluster_time(mut reply: Document, ts: Timestamp) -> Document {
    reply.insert("$clusterTime", cluster_time(ts));
    reply.insert("operationTime", ts);
    reply
}

/// A hello reply (or, with [`HelloOptions::legacy`], an isMaster reply) for the server `opts`
/// describes, on the connection `connection_id`, at the cluster time `ts`.
///
/// A replica-set primary's reply looks like MongoDB 7.0's:
/// `{topologyVersion, hosts, setName, setVersion, isWritablePrimary: true, secondary: false,
/// primary, me, electionId, lastWrite, maxBsonObjectSize, maxMessageSizeBytes,
/// maxWriteBatchSize, localTime, logicalSessionTimeoutMinutes, connectionId, minWireVersion,
/// maxWireVersion, readOnly: false, compression?, ok: 1.0, $clusterTime, operationTime}`.
pub fn hello_reply(opts: &HelloOptions, connection_id: i64, ts: Timestamp) -> Document {
    let now = DateTime::now();
    let writable_key = if opts.legacy {
        "ismaster"
    } else {
        "isWritablePrimary"
    };
    let mut reply = doc! {
        "topologyVersion": { "processId": opts.process_id, "counter": opts.topology_counter },
    };
    let hosts: Vec<Bson> = if opts.hosts.is_empty() {
        vec![Bson::String(opts.me.clone())]
    } else {
        opts.hosts.iter().cloned().map(Bson::String).collect()
    };
    match &opts.topology {
        Topology::ReplicaSetPrimary { set_name } | Topology::ReplicaSetSecondary { set_name } => {
            let primary = matches!(opts.topology, Topology::ReplicaSetPrimary { .. });
            reply.insert("hosts", hosts);
            reply.insert("setName", set_name.as_str());
            reply.insert("setVersion", opts.set_version);
            reply.insert(writable_key, primary);
            reply.insert("secondary", !primary);
            if primary {
                reply.insert("primary", opts.me.as_str());
            }
            reply.insert("me", opts.me.as_str());
            if primary {
                reply.insert("electionId", opts.election_id);
            }
            let optime = doc! { "ts": ts, "t": 1i64 };
            let date = DateTime::from_millis(i64::from(ts.time).saturating_mul(1000));
            reply.insert(
                "lastWrite",
                doc! {
                    "opTime": optime.clone(),
                    "lastWriteDate": date,
                    "majorityOpTime": optime,
                    "majorityWriteDate": date,
                },
            );
        }
        Topology::Standalone => {
            reply.insert(writable_key, true);
        }
        Topology::Mongos => {
            reply.insert(writable_key, true);
            reply.insert("msg", "isdbgrid");
        }
    }
    if let Some(service) = opts.service_ids.first() {
        reply.insert("serviceId", *service);
    }
    reply.insert("maxBsonObjectSize", opts.max_bson_object_size);
    reply.insert("maxMessageSizeBytes", opts.max_message_size_bytes);
    reply.insert("maxWriteBatchSize", opts.max_write_batch_size);
    reply.insert("localTime", now);
    if let Some(minutes) = opts.logical_session_timeout_minutes {
        reply.insert("logicalSessionTimeoutMinutes", minutes);
    }
    // The server writes the id as int32 while it fits (BSONObjBuilder::appendNumber).
    match i32::try_from(connection_id) {
        Ok(small) => reply.insert("connectionId", small),
        Err(_) => reply.insert("connectionId", connection_id),
    };
    reply.insert("minWireVersion", opts.min_wire_version);
    reply.insert("maxWireVersion", opts.max_wire_version);
    reply.insert("readOnly", false);
    if !opts.compression.is_empty() {
        let list: Vec<Bson> = opts.compression.iter().cloned().map(Bson::String).collect();
        reply.insert("compression", list);
    }
    reply.insert("ok", 1.0);
    if opts.topology.has_cluster_time() {
        reply = with_cluster_time(reply, ts);
    }
    reply
}

/// `{ok: 1.0}`: the reply of ping, endSessions and other commands with nothing to say.
pub fn ok_reply() -> Document {
    doc! { "ok": 1.0 }
}

/// A command error: `{ok: 0.0, errmsg, code, codeName, errorLabels?}` (the labels are left
/// out when empty, as the server does).
pub fn error_reply(code: i32, code_name: &str, errmsg: &str, labels: &[&str]) -> Document {
    let mut reply = doc! {
        "ok": 0.0,
        "errmsg": errmsg,
        "code": code,
        "codeName": code_name,
    };
    if !labels.is_empty() {
        let labels: Vec<Bson> = labels
            .iter()
            .map(|l| Bson::String((*l).to_owned()))
            .collect();
        reply.insert("errorLabels", labels);
    }
    reply
}

/// The error a server gives for an unknown command: 59 CommandNotFound.
pub fn command_not_found(name: &str) -> Document {
    error_reply(
        codes::COMMAND_NOT_FOUND.0,
        codes::COMMAND_NOT_FOUND.1,
        &format!("no such command: '{name}'"),
        &[],
    )
}

/// The error a server gives for a getMore on an unknown cursor: 43 CursorNotFound.
pub fn cursor_not_found(id: i64) -> Document {
    error_reply(
        codes::CURSOR_NOT_FOUND.0,
        codes::CURSOR_NOT_FOUND.1,
        &format!("cursor id {id} not found"),
        &[],
    )
}

/// Which batch field a cursor reply carries.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchKind {
    /// `firstBatch`: the reply of find or aggregate.
    First,
    /// `nextBatch`: the reply of getMore.
    Next,
}

impl BatchKind {
    /// The field name: `firstBatch` or `nextBatch`.
    pub fn field(self) -> &'static str {
        match self {
            BatchKind::First => "firstBatch",
            BatchKind::Next => "nextBatch",
        }
    }
}

/// A cursor reply: `{cursor: {firstBatch|nextBatch, postBatchResumeToken?, id: Int64, ns},
/// ok: 1.0, $clusterTime?, operationTime?}`. `$clusterTime` and `operationTime` are added
/// when `operation_time` is given, as a replica set does.
pub fn cursor_reply(
    id: i64,
    ns: &str,
    kind: BatchKind,
    batch: Vec<Document>,
    post_batch_resume_token: Option<Document>,
    operation_time: Option<Timestamp>,
) -> Document {
    let batch: Vec<Bson> = batch.into_iter().map(Bson::Document).collect();
    let mut cursor = doc! { kind.field(): batch };
    if let Some(token) = post_batch_resume_token {
        cursor.insert("postBatchResumeToken", token);
    }
    cursor.insert("id", id);
    cursor.insert("ns", ns);
    let reply = doc! { "cursor": cursor, "ok": 1.0 };
    match operation_time {
        Some(ts) => with_cluster_time(reply, ts),
        None => reply,
    }
}

/// The reply of killCursors: `{cursorsKilled, cursorsNotFound, cursorsAlive,
/// cursorsUnknown, ok: 1.0}`.
pub fn kill_cursors_reply(killed: &[i64], not_found: &[i64]) -> Document {
    let list = |ids: &[i64]| ids.iter().map(|id| Bson::Int64(*id)).collect::<Vec<Bson>>();
    doc! {
        "cursorsKilled": list(killed),
        "cursorsNotFound": list(not_found),
        "cursorsAlive": [],
        "cursorsUnknown": [],
        "ok": 1.0,
    }
}

/// One entry of `writeErrors`: `{index, code, codeName?, errmsg}`.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteErrorShape {
    /// Index of the failed statement in the batch.
    pub index: i32,
    /// The error code, e.g. 11000.
    pub code: i32,
    /// The code's name (left out of the document when `None`, as servers before 7.0 do).
    pub code_name: Option<String>,
    /// The message.
    pub errmsg: String,
}

impl WriteErrorShape {
    /// A duplicate-key error (11000) at `index`, with the message a server writes for it.
    pub fn duplicate_key(index: i32, ns: &str, id: impl std::fmt::Display) -> WriteErrorShape {
        WriteErrorShape {
            index,
            code: codes::DUPLICATE_KEY.0,
            code_name: Some(codes::DUPLICATE_KEY.1.to_owned()),
            errmsg: format!(
                "E11000 duplicate key error collection: {ns} index: _id_ dup key: {{ _id: {id} }}"
            ),
        }
    }

    /// This entry as a document.
    pub fn to_document(&self) -> Document {
        let mut d = doc! { "index": self.index, "code": self.code };
        if let Some(name) = &self.code_name {
            d.insert("codeName", name.as_str());
        }
        d.insert("errmsg", self.errmsg.as_str());
        d
    }
}

/// A `writeConcernError`: `{code, codeName, errmsg, errInfo, errorLabels?}`.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteConcernErrorShape {
    /// The error code, e.g. 64 WriteConcernFailed.
    pub code: i32,
    /// The code's name.
    pub code_name: String,
    /// The message.
    pub errmsg: String,
    /// Error labels (e.g. `RetryableWriteError`), left out when empty.
    pub labels: Vec<String>,
}

impl WriteConcernErrorShape {
    /// A `wtimeout` failure (64 WriteConcernFailed), as a server reports it.
    pub fn wtimeout() -> WriteConcernErrorShape {
        WriteConcernErrorShape {
            code: codes::WRITE_CONCERN_FAILED.0,
            code_name: codes::WRITE_CONCERN_FAILED.1.to_owned(),
            errmsg: "waiting for replication timed out".to_owned(),
            labels: Vec::new(),
        }
    }

    /// This error as a document.
    pub fn to_document(&self) -> Document {
        let mut d = doc! {
            "code": self.code,
            "codeName": self.code_name.as_str(),
            "errmsg": self.errmsg.as_str(),
            "errInfo": { "wtimeout": true, "writeConcern": { "w": "majority", "wtimeout": 100, "provenance": "clientSupplied" } },
        };
        if !self.labels.is_empty() {
            let labels: Vec<Bson> = self.labels.iter().cloned().map(Bson::String).collect();
            d.insert("errorLabels", labels);
        }
        d
    }
}

/// The reply of an insert, update or delete, built field by field.
///
/// ```
/// use brook_testkit::shapes::{WriteErrorShape, WriteReply};
/// let reply = WriteReply::new(1)
///     .write_error(WriteErrorShape::duplicate_key(1, "db.c", 7))
///     .to_document();
/// assert_eq!(reply.get_i32("n").unwrap(), 1);
/// assert_eq!(reply.get_array("writeErrors").unwrap().len(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WriteReply {
    /// `n`: documents inserted, matched (update) or deleted.
    pub n: i32,
    /// `nModified` (updates only).
    pub n_modified: Option<i32>,
    /// `upserted`: `(index, _id)` of each upserted document (updates only).
    pub upserted: Vec<(i32, Bson)>,
    /// `writeErrors`, left out when empty.
    pub write_errors: Vec<WriteErrorShape>,
    /// `writeConcernError`.
    pub write_concern_error: Option<WriteConcernErrorShape>,
    /// `operationTime` and `$clusterTime`, as a replica set adds them.
    pub operation_time: Option<Timestamp>,
}

impl WriteReply {
    /// A reply with `n` and nothing else.
    pub fn new(n: i32) -> WriteReply {
        WriteReply {
            n,
            ..WriteReply::default()
        }
    }

    /// Set `nModified` (an update reply).
    pub fn modified(mut self, n_modified: i32) -> WriteReply {
        self.n_modified = Some(n_modified);
        self
    }

    /// Add an `upserted` entry.
    pub fn upserted(mut self, index: i32, id: impl Into<Bson>) -> WriteReply {
        self.upserted.push((index, id.into()));
        self
    }

    /// Add a `writeErrors` entry.
    pub fn write_error(mut self, error: WriteErrorShape) -> WriteReply {
        self.write_errors.push(error);
        self
    }

    /// Set the `writeConcernError`.
    pub fn write_concern_error(mut self, error: WriteConcernErrorShape) -> WriteReply {
        self.write_concern_error = Some(error);
        self
    }

    /// Add `operationTime` and `$clusterTime`.
    pub fn at(mut self, ts: Timestamp) -> WriteReply {
        self.operation_time = Some(ts);
        self
    }

    /// The reply document: `{n, electionId?, opTime?, nModified?, upserted?, writeErrors?,
    /// writeConcernError?, ok: 1.0, $clusterTime?, operationTime?}`.
    pub fn to_document(&self) -> Document {
        let mut d = doc! { "n": self.n };
        if let Some(ts) = self.operation_time {
            d.insert("opTime", doc! { "ts": ts, "t": 1i64 });
        }
        if let Some(m) = self.n_modified {
            d.insert("nModified", m);
        }
        if !self.upserted.is_empty() {
            let list: Vec<Bson> = self
                .upserted
                .iter()
                .map(|(index, id)| Bson::Document(doc! { "index": *index, "_id": id.clone() }))
                .collect();
            d.insert("upserted", list);
        }
        if !self.write_errors.is_empty() {
            let list: Vec<Bson> = self
                .write_errors
                .iter()
                .map(|e| Bson::Document(e.to_document()))
                .collect();
            d.insert("writeErrors", list);
        }
        if let Some(wce) = &self.write_concern_error {
            d.insert("writeConcernError", wce.to_document());
        }
        d.insert("ok", 1.0);
        match self.operation_time {
            Some(ts) => with_cluster_time(d, ts),
            None => d,
        }
    }
}

/// An event resume token, `{_data: "82…"}`: a hex string (uppercase, like the server's
/// KeyString encoding) that begins with the event's cluster time, so tokens of later events
/// sort after earlier ones. `seq` tells apart events of the same cluster time.
pub fn resume_token(ts: Timestamp, seq: u32) -> Document {
    doc! { "_data": format!("82{:08X}{:08X}2B042C0100296E5A1004{:08X}463C5F6964003C0004", ts.time, ts.increment, seq) }
}

/// A high-water-mark token as found in `postBatchResumeToken`, `{_data: "82…"}`, for the
/// cluster time `ts`.
pub fn post_batch_resume_token(ts: Timestamp) -> Document {
    doc! { "_data": format!("82{:08X}{:08X}2B0229296E04", ts.time, ts.increment) }
}

/// The largest document a server stores or returns (`maxBsonObjectSize`, 16 MiB): a change
/// event over it fails the stream with 10334 BSONObjectTooLarge unless the pipeline ends
/// with `$changeStreamSplitLargeEvent`, and a batch stops before it would exceed it.
pub const MAX_BSON_OBJECT_SIZE: usize = 16 * 1024 * 1024;

/// The resume token of fragment `fragment` (1-based) of the event whose token is `event`:
/// as a server makes it, the event's KeyString with `fragmentNum` (0-based) appended before
/// its end byte `04`, so the fragments' tokens sort after the event's own and before the
/// next event's. `None` if `event` has no `_data` string ending in `04`.
pub fn fragment_resume_token(event: &Document, fragment: u32) -> Option<Document> {
    let data = event.get_str("_data").ok()?;
    let prefix = data.strip_suffix("04")?;
    let num = keystring_uint(u64::from(fragment.checked_sub(1)?));
    Some(doc! { "_data": format!("{prefix}{num}04") })
}

/// If `token` is the `_data` of a fragment of the event whose `_data` is `event`: the
/// fragment's 1-based number.
pub fn fragment_of(event: &str, token: &str) -> Option<u32> {
    let rest = token.strip_prefix(event.strip_suffix("04")?)?;
    let num = rest.strip_suffix("04")?;
    let (kind, digits) = (u8::from_str_radix(num.get(..2)?, 16).ok()?, num.get(2..)?);
    let raw = match kind {
        0x29 if digits.is_empty() => 0,
        // 0x2B..=0x32: a positive integer of 1 to 8 bytes.
        0x2B..=0x32 if digits.len() == 2 * usize::from(kind - 0x2A) => {
            u64::from_str_radix(digits, 16).ok()?
        }
        _ => return None,
    };
    let n = u32::try_from(raw >> 1).ok()?;
    n.checked_add(1)
}

/// A non-negative integer as a KeyString number: 0x29 for zero, else 0x2A + its byte count
/// and the big-endian bytes of the value shifted left once (the low bit flags a fraction).
fn keystring_uint(n: u64) -> String {
    if n == 0 {
        return "29".to_owned();
    }
    let raw = u128::from(n) << 1;
    let bytes = raw.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    let mut out = format!("{:02X}", 0x2A + (bytes.len() - skip));
    for b in bytes.iter().skip(skip) {
        out.push_str(&format!("{b:02X}"));
    }
    out
}

/// The BSON size of `doc`, in bytes.
pub fn bson_size(doc: &Document) -> usize {
    let mut counter = ByteCounter(0);
    // Serialising only fails on a document with an over-long or NUL-containing key, which
    // no caller builds; such a document counts what was written before the failure.
    let _ = doc.to_writer(&mut counter);
    counter.0
}

struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Why [`split_event`] could not split an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsplittableField {
    /// The top-level field that alone does not fit in a fragment.
    pub field: String,
    /// Its size in the fragment, in bytes.
    pub size: usize,
}

/// Split a change event (with its `_id` token) into fragments of at most `limit` bytes, as
/// `$changeStreamSplitLargeEvent` does: only top-level fields are split, kept in the
/// event's order and packed greedily (as many fields as fit in the first fragment, then
/// the next…); each fragment is `{_id: <its own token>, splitEvent: {fragment: k, of: n},
/// <its fields>}`. An event whose fields would fit in one fragment is still returned as
/// one fragment (`of: 1`); callers split only events over [`MAX_BSON_OBJECT_SIZE`]. A
/// single field too big for a fragment of its own is an error (the server fails the stream).
pub fn split_event(event: &Document, limit: usize) -> Result<Vec<Document>, UnsplittableField> {
    let token = event.get_document("_id").cloned().unwrap_or_default();
    // The fragment header at its largest: the longest fragment number a token can carry
    // here, and int32 counters.
    let header = doc! {
        "_id": fragment_resume_token(&token, u32::MAX).unwrap_or_else(|| token.clone()),
        "splitEvent": { "fragment": i32::MAX, "of": i32::MAX },
    };
    let base = bson_size(&header);
    let mut groups: Vec<Document> = Vec::new();
    let mut current = Document::new();
    let mut size = base;
    for (key, value) in event {
        if key == "_id" {
            continue;
        }
        // A field's size in a document: the document's size minus an empty one's (5).
        let field = bson_size(&doc! { key.as_str(): value.clone() }) - 5;
        if base + field > limit {
            return Err(UnsplittableField {
                field: key.clone(),
                size: field,
            });
        }
        if size + field > limit && !current.is_empty() {
            groups.push(std::mem::take(&mut current));
            size = base;
        }
        current.insert(key.clone(), value.clone());
        size += field;
    }
    groups.push(current);
    let of = i32::try_from(groups.len()).unwrap_or(i32::MAX);
    Ok(groups
        .into_iter()
        .zip(1..)
        .map(|(fields, k)| {
            let id = u32::try_from(k)
                .ok()
                .and_then(|k| fragment_resume_token(&token, k))
                .unwrap_or_else(|| token.clone());
            let mut fragment = doc! { "_id": id, "splitEvent": { "fragment": k, "of": of } };
            fragment.extend(fields);
            fragment
        })
        .collect())
}

/// Split `"db.coll"` at its first dot into `{db, coll}` (`coll` absent for a bare db name).
pub fn namespace(ns: &str) -> Document {
    match ns.split_once('.') {
        Some((db, coll)) => doc! { "db": db, "coll": coll },
        None => doc! { "db": ns },
    }
}

fn wall_time(ts: Timestamp) -> DateTime {
    DateTime::from_millis(i64::from(ts.time).saturating_mul(1000))
}

fn document_key(doc: &Document) -> Document {
    match doc.get("_id") {
        Some(id) => doc! { "_id": id.clone() },
        None => Document::new(),
    }
}

fn event_head(ts: Timestamp, operation_type: &str) -> Document {
    doc! {
        "_id": resume_token(ts, 0),
        "operationType": operation_type,
        "clusterTime": ts,
        "wallTime": wall_time(ts),
    }
}

/// An `insert` change event: `{_id: {_data}, operationType: "insert", clusterTime, wallTime,
/// fullDocument, ns: {db, coll}, documentKey: {_id}}`.
pub fn insert_event(ts: Timestamp, ns: &str, full_document: Document) -> Document {
    let mut e = event_head(ts, "insert");
    let key = document_key(&full_document);
    e.insert("fullDocument", full_document);
    e.insert("ns", namespace(ns));
    e.insert("documentKey", key);
    e
}

/// An `update` change event: `{_id, operationType: "update", clusterTime, wallTime, ns,
/// documentKey, updateDescription: {updatedFields, removedFields, truncatedArrays},
/// fullDocument?}` (`fullDocument` present when the stream asked for `updateLookup`; a
/// `None` inside it stands for the `null` of a deleted document).
pub fn update_event(
    ts: Timestamp,
    ns: &str,
    document_key: Document,
    updated_fields: Document,
    removed_fields: &[&str],
    full_document: Option<Option<Document>>,
) -> Document {
    let mut e = event_head(ts, "update");
    e.insert("ns", namespace(ns));
    e.insert("documentKey", document_key);
    let removed: Vec<Bson> = removed_fields
        .iter()
        .map(|f| Bson::String((*f).to_owned()))
        .collect();
    e.insert(
        "updateDescription",
        doc! { "updatedFields": updated_fields, "removedFields": removed, "truncatedArrays": [] },
    );
    if let Some(full) = full_document {
        e.insert("fullDocument", full.map_or(Bson::Null, Bson::Document));
    }
    e
}

/// A `replace` change event: `{_id, operationType: "replace", clusterTime, wallTime,
/// fullDocument, ns, documentKey}`.
pub fn replace_event(ts: Timestamp, ns: &str, full_document: Document) -> Document {
    let mut e = event_head(ts, "replace");
    let key = document_key(&full_document);
    e.insert("fullDocument", full_document);
    e.insert("ns", namespace(ns));
    e.insert("documentKey", key);
    e
}

/// A `delete` change event: `{_id, operationType: "delete", clusterTime, wallTime, ns,
/// documentKey}`.
pub fn delete_event(ts: Timestamp, ns: &str, document_key: Document) -> Document {
    let mut e = event_head(ts, "delete");
    e.insert("ns", namespace(ns));
    e.insert("documentKey", document_key);
    e
}

/// A `drop` change event (a collection was dropped): `{_id, operationType: "drop",
/// clusterTime, wallTime, ns}`. A collection stream sees an `invalidate` right after it.
pub fn drop_event(ts: Timestamp, ns: &str) -> Document {
    let mut e = event_head(ts, "drop");
    e.insert("ns", namespace(ns));
    e
}

/// An `invalidate` change event: `{_id, operationType: "invalidate", clusterTime,
/// wallTime}`. Its `_id` is the token to pass as `startAfter` to start again.
pub fn invalidate_event(ts: Timestamp) -> Document {
    event_head(ts, "invalidate")
}

/// Give an event another `_id`: `resume_token(ts, seq)` for its own cluster time. Use it to
/// tell apart events of the same cluster time (e.g. several inserts of one transaction).
pub fn with_seq(mut event: Document, seq: u32) -> Document {
    if let Ok(ts) = event.get_timestamp("clusterTime") {
        event.insert("_id", resume_token(ts, seq));
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts() -> Timestamp {
        Timestamp {
            time: 1_700_000_000,
            increment: 3,
        }
    }

    fn keys(d: &Document) -> Vec<&str> {
        d.keys().map(String::as_str).collect()
    }

    #[test]
    fn primary_hello_has_the_7_0_shape() {
        let opts = HelloOptions {
            me: "h:1".to_owned(),
            ..HelloOptions::default()
        };
        let d = hello_reply(&opts, 12, ts());
        assert_eq!(
            keys(&d),
            [
                "topologyVersion",
                "hosts",
                "setName",
                "setVersion",
                "isWritablePrimary",
                "secondary",
                "primary",
                "me",
                "electionId",
                "lastWrite",
                "maxBsonObjectSize",
                "maxMessageSizeBytes",
                "maxWriteBatchSize",
                "localTime",
                "logicalSessionTimeoutMinutes",
                "connectionId",
                "minWireVersion",
                "maxWireVersion",
                "readOnly",
                "ok",
                "$clusterTime",
                "operationTime",
            ]
        );
        assert_eq!(
            d.get_array("hosts").unwrap(),
            &vec![Bson::String("h:1".into())]
        );
        assert_eq!(d.get_str("setName").unwrap(), "rs0");
        assert_eq!(d.get_i32("maxWireVersion").unwrap(), 21);
        assert_eq!(d.get_i32("connectionId").unwrap(), 12);
        assert_eq!(d.get_i32("logicalSessionTimeoutMinutes").unwrap(), 30);
        assert_eq!(d.get_f64("ok").unwrap(), 1.0);
        assert_eq!(d.get_timestamp("operationTime").unwrap(), ts());
        let tv = d.get_document("topologyVersion").unwrap();
        assert_eq!(tv.get_i64("counter").unwrap(), 6);
        let ct = d.get_document("$clusterTime").unwrap();
        assert_eq!(ct.get_timestamp("clusterTime").unwrap(), ts());
        let sig = ct.get_document("signature").unwrap();
        assert_eq!(sig.get_binary_generic("hash").unwrap().len(), 20);
        assert_eq!(sig.get_i64("keyId").unwrap(), 0);
        let lw = d.get_document("lastWrite").unwrap();
        assert_eq!(
            lw.get_document("opTime")
                .unwrap()
                .get_timestamp("ts")
                .unwrap(),
            ts()
        );
    }

    #[test]
    fn standalone_legacy_and_compression() {
        let opts = HelloOptions {
            topology: Topology::Standalone,
            legacy: true,
            compression: vec!["zstd".into()],
            max_wire_version: WIRE_VERSION_4_2,
            logical_session_timeout_minutes: None,
            ..HelloOptions::default()
        };
        let d = hello_reply(&opts, 1, ts());
        assert!(d.get_bool("ismaster").unwrap());
        assert!(!d.contains_key("isWritablePrimary"));
        assert!(!d.contains_key("setName"));
        assert!(!d.contains_key("$clusterTime"));
        assert!(!d.contains_key("operationTime"));
        assert!(!d.contains_key("logicalSessionTimeoutMinutes"));
        assert_eq!(d.get_i32("maxWireVersion").unwrap(), 8);
        assert_eq!(
            d.get_array("compression").unwrap(),
            &vec![Bson::String("zstd".into())]
        );
    }

    #[test]
    fn mongos_and_secondary() {
        let mongos = hello_reply(
            &HelloOptions {
                topology: Topology::Mongos,
                ..HelloOptions::default()
            },
            1,
            ts(),
        );
        assert_eq!(mongos.get_str("msg").unwrap(), "isdbgrid");
        assert!(mongos.contains_key("$clusterTime"));
        let secondary = hello_reply(
            &HelloOptions {
                topology: Topology::ReplicaSetSecondary {
                    set_name: "s".into(),
                },
                ..HelloOptions::default()
            },
            1,
            ts(),
        );
        assert!(!secondary.get_bool("isWritablePrimary").unwrap());
        assert!(secondary.get_bool("secondary").unwrap());
        assert!(!secondary.contains_key("primary"));
        assert!(!secondary.contains_key("electionId"));
    }

    #[test]
    fn a_large_connection_id_is_int64() {
        let d = hello_reply(&HelloOptions::default(), 1 << 40, ts());
        assert_eq!(d.get_i64("connectionId").unwrap(), 1 << 40);
    }

    #[test]
    fn error_replies() {
        let d = error_reply(
            43,
            "CursorNotFound",
            "gone",
            &[RESUMABLE_CHANGE_STREAM_ERROR],
        );
        assert_eq!(
            d,
            doc! {
                "ok": 0.0,
                "errmsg": "gone",
                "code": 43,
                "codeName": "CursorNotFound",
                "errorLabels": ["ResumableChangeStreamError"],
            }
        );
        assert!(!error_reply(1, "X", "m", &[]).contains_key("errorLabels"));
        assert_eq!(command_not_found("foo").get_i32("code").unwrap(), 59);
        assert_eq!(
            cursor_not_found(5).get_str("errmsg").unwrap(),
            "cursor id 5 not found"
        );
    }

    #[test]
    fn cursor_replies() {
        let d = cursor_reply(
            9,
            "db.c",
            BatchKind::First,
            vec![doc! { "a": 1 }],
            Some(post_batch_resume_token(ts())),
            Some(ts()),
        );
        assert_eq!(keys(&d), ["cursor", "ok", "$clusterTime", "operationTime"]);
        let c = d.get_document("cursor").unwrap();
        assert_eq!(keys(c), ["firstBatch", "postBatchResumeToken", "id", "ns"]);
        assert_eq!(c.get_i64("id").unwrap(), 9);
        assert_eq!(c.get_str("ns").unwrap(), "db.c");
        let plain = cursor_reply(0, "db.c", BatchKind::Next, vec![], None, None);
        assert_eq!(
            plain,
            doc! { "cursor": { "nextBatch": [], "id": 0i64, "ns": "db.c" }, "ok": 1.0 }
        );
        assert_eq!(
            kill_cursors_reply(&[1], &[2]),
            doc! {
                "cursorsKilled": [1i64],
                "cursorsNotFound": [2i64],
                "cursorsAlive": [],
                "cursorsUnknown": [],
                "ok": 1.0,
            }
        );
    }

    #[test]
    fn write_replies() {
        let d = WriteReply::new(2)
            .modified(1)
            .upserted(1, 77)
            .write_error(WriteErrorShape::duplicate_key(0, "db.c", 5))
            .write_concern_error(WriteConcernErrorShape {
                labels: vec![RETRYABLE_WRITE_ERROR.to_owned()],
                ..WriteConcernErrorShape::wtimeout()
            })
            .at(ts())
            .to_document();
        assert_eq!(
            keys(&d),
            [
                "n",
                "opTime",
                "nModified",
                "upserted",
                "writeErrors",
                "writeConcernError",
                "ok",
                "$clusterTime",
                "operationTime"
            ]
        );
        assert_eq!(
            d.get_array("upserted").unwrap(),
            &vec![Bson::Document(doc! { "index": 1, "_id": 77 })]
        );
        let we = d.get_array("writeErrors").unwrap()[0]
            .as_document()
            .unwrap();
        assert_eq!(we.get_i32("code").unwrap(), 11000);
        assert!(we.get_str("errmsg").unwrap().starts_with("E11000"));
        let wce = d.get_document("writeConcernError").unwrap();
        assert_eq!(wce.get_i32("code").unwrap(), 64);
        assert_eq!(
            wce.get_array("errorLabels").unwrap(),
            &vec![Bson::String("RetryableWriteError".into())]
        );
        assert_eq!(WriteReply::new(0).to_document(), doc! { "n": 0, "ok": 1.0 });
    }

    #[test]
    fn tokens_are_hex_and_ordered_by_time() {
        let a = resume_token(ts(), 0);
        let later = Timestamp {
            time: ts().time,
            increment: 4,
        };
        let b = resume_token(later, 0);
        let (a, b) = (a.get_str("_data").unwrap(), b.get_str("_data").unwrap());
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(a.starts_with("82"));
        assert!(a < b);
        let hwm = post_batch_resume_token(ts());
        assert!(hwm.get_str("_data").unwrap().starts_with(&a[..18]));
    }

    #[test]
    fn change_events() {
        let ins = insert_event(ts(), "db.c", doc! { "_id": 1, "x": 2 });
        assert_eq!(
            keys(&ins),
            [
                "_id",
                "operationType",
                "clusterTime",
                "wallTime",
                "fullDocument",
                "ns",
                "documentKey"
            ]
        );
        assert_eq!(ins.get_str("operationType").unwrap(), "insert");
        assert_eq!(
            ins.get_document("ns").unwrap(),
            &doc! { "db": "db", "coll": "c" }
        );
        assert_eq!(ins.get_document("documentKey").unwrap(), &doc! { "_id": 1 });
        assert_eq!(ins.get_timestamp("clusterTime").unwrap(), ts());
        assert_eq!(
            ins.get_datetime("wallTime").unwrap().timestamp_millis(),
            1_700_000_000_000
        );

        let upd = update_event(
            ts(),
            "db.c",
            doc! { "_id": 1 },
            doc! { "x": 3 },
            &["y"],
            Some(None),
        );
        assert_eq!(upd.get_str("operationType").unwrap(), "update");
        let desc = upd.get_document("updateDescription").unwrap();
        assert_eq!(
            desc.get_document("updatedFields").unwrap(),
            &doc! { "x": 3 }
        );
        assert_eq!(
            desc.get_array("removedFields").unwrap(),
            &vec![Bson::String("y".into())]
        );
        assert_eq!(upd.get("fullDocument"), Some(&Bson::Null));
        let upd = update_event(ts(), "db.c", doc! { "_id": 1 }, doc! {}, &[], None);
        assert!(!upd.contains_key("fullDocument"));

        let rep = replace_event(ts(), "db.c", doc! { "_id": 1 });
        assert_eq!(rep.get_str("operationType").unwrap(), "replace");
        let del = delete_event(ts(), "db.c", doc! { "_id": 1 });
        assert!(!del.contains_key("fullDocument"));
        let drop = drop_event(ts(), "db.c");
        assert_eq!(drop.get_str("operationType").unwrap(), "drop");
        let inv = invalidate_event(ts());
        assert_eq!(
            keys(&inv),
            ["_id", "operationType", "clusterTime", "wallTime"]
        );
        assert_eq!(namespace("db"), doc! { "db": "db" });
        assert_eq!(namespace("db.a.b"), doc! { "db": "db", "coll": "a.b" });

        let second = with_seq(ins.clone(), 1);
        assert_ne!(second.get("_id"), ins.get("_id"));
        assert_eq!(keys(&second), keys(&ins));
    }

    #[test]
    fn fragment_tokens_sort_between_their_event_and_the_next() {
        let event = resume_token(ts(), 4);
        let next = resume_token(
            Timestamp {
                time: ts().time,
                increment: ts().increment + 1,
            },
            5,
        );
        let data = event.get_str("_data").unwrap();
        let mut previous = data.to_owned();
        for k in [1u32, 2, 3, 64, 65, 200, 70_000, u32::MAX] {
            let token = fragment_resume_token(&event, k).unwrap();
            let t = token.get_str("_data").unwrap();
            assert!(t > previous.as_str(), "fragment {k}: {t} after {previous}");
            assert!(t < next.get_str("_data").unwrap());
            assert_eq!(fragment_of(data, t), Some(k), "{t}");
            assert_eq!(fragment_of(next.get_str("_data").unwrap(), t), None);
            previous = t.to_owned();
        }
        // As a server's: the first fragment's token ends "…2904" (fragmentNum 0).
        let first = fragment_resume_token(&event, 1).unwrap();
        assert!(first.get_str("_data").unwrap().ends_with("002904"));
        assert_eq!(fragment_resume_token(&event, 0), None);
        assert_eq!(fragment_of(data, data), None);
        // A length byte that disagrees with the digits is not a fragment token.
        let prefix = data.strip_suffix("04").unwrap();
        assert_eq!(fragment_of(data, &format!("{prefix}2C0204")), None);
        assert_eq!(fragment_of(data, &format!("{prefix}2B0404")), Some(3));
    }

    #[test]
    fn split_event_packs_top_level_fields_in_order() {
        let big = "x".repeat(600);
        let event = doc! {
            "_id": resume_token(ts(), 1),
            "operationType": "update",
            "clusterTime": ts(),
            "fullDocument": { "_id": 1, "big": big.clone() },
            "fullDocumentBeforeChange": { "_id": 1, "big": big.clone() },
            "ns": { "db": "d", "coll": "c" },
        };
        let fragments = split_event(&event, 1024).unwrap();
        assert_eq!(fragments.len(), 2);
        let keys: Vec<Vec<&str>> = fragments
            .iter()
            .map(|f| f.keys().map(String::as_str).collect())
            .collect();
        assert_eq!(
            keys,
            [
                vec![
                    "_id",
                    "splitEvent",
                    "operationType",
                    "clusterTime",
                    "fullDocument"
                ],
                vec!["_id", "splitEvent", "fullDocumentBeforeChange", "ns"],
            ]
        );
        for (i, f) in fragments.iter().enumerate() {
            assert!(bson_size(f) <= 1024);
            let k = i32::try_from(i + 1).unwrap();
            assert_eq!(
                f.get_document("splitEvent").unwrap(),
                &doc! { "fragment": k, "of": 2 }
            );
            assert_eq!(
                f.get_document("_id").unwrap(),
                &fragment_resume_token(event.get_document("_id").unwrap(), k as u32).unwrap()
            );
        }
        // A field that alone exceeds the limit cannot be split.
        let err = split_event(&event, 500).unwrap_err();
        assert_eq!(err.field, "fullDocument");
        assert!(err.size > 600);
    }

    #[test]
    fn bson_size_is_the_serialised_length() {
        let d = doc! { "a": 1, "b": "xyz", "c": { "d": [1, 2] } };
        assert_eq!(bson_size(&d), d.to_vec().unwrap().len());
        assert_eq!(bson_size(&Document::new()), 5);
    }
}
